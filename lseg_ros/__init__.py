"""lseg_ros: LSeg (Li et al., ICLR 2022) for ROS 2.

The interfaces that rosidl generates (lseg_ros.msg, lseg_ros.srv and their C extensions) exist only
in the copy that CMake installs (scripts/setup.sh, colcon), which holds the Python sources too.
Python started in a source checkout imports this source package instead, so there, and only there,
its path is extended with the installed copy's (the source modules first). An installed copy, CMake's
or pip's, is complete on its own and never borrows modules from another installation: a module left
out of a pip install fails to import instead of being found in some other copy.
"""
from pathlib import Path as _Path

if (_Path(__file__).resolve().parent.parent / "package.xml").is_file():  # a source checkout
    import pkgutil as _pkgutil

    __path__ = _pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
