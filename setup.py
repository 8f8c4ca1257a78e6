"""pip install of the ROS-free parts of lseg_ros: the model library and the offline tools.

    pip install .            # then: lseg-segment, lseg-evaluate, lseg-train, lseg-convert, lseg-fetch, lseg-export
    pip install .[onnx]      # + what lseg-export and the onnxruntime backend need (CPU build)

ROS 2 users build the whole package (node, interfaces, launch files) with colcon instead: the
package.xml build type is ament_cmake and CMakeLists.txt installs everything; colcon does not run
this file.
"""
from setuptools import setup

setup(
    name="lseg_ros",
    version="0.1.0",
    description="LSeg (language-driven semantic segmentation) for robots: model library and offline tools",
    license="MIT",
    python_requires=">=3.10",
    packages=["lseg_ros", "lseg_ros.model", "lseg_ros.tools"],
    py_modules=["lseg_ros.imaging"],
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "timm>=1.0",
        "open_clip_torch>=2.29",
        "safetensors",
        "numpy",
        "opencv-python-headless",
        "pyyaml",
        "tqdm",
        "matplotlib",
        "rosbags",
    ],
    extras_require={
        # lseg-export and the onnxruntime backend (CPU provider); CUDA/TensorRT: onnxruntime-gpu instead
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
    },
    entry_points={
        "console_scripts": [
            "lseg-segment=lseg_ros.tools.segment:main",
            "lseg-evaluate=lseg_ros.tools.evaluate:main",
            "lseg-train=lseg_ros.tools.train:main",
            "lseg-convert=lseg_ros.tools.convert:main",
            "lseg-fetch=lseg_ros.tools.fetch:main",
            "lseg-export=lseg_ros.tools.export:main",
        ]
    },
)
