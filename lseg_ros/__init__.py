"""lseg_ros: LSeg (Li et al., ICLR 2022) for ROS 2.

The source tree and the CMake-installed package share this name: the interfaces that rosidl
generates (lseg_ros.msg, lseg_ros.srv) live only in the installed copy. extend_path lets Python
started in the repository root find both (the source modules first).
"""
import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)
__version__ = "0.1.0"
