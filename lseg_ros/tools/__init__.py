"""ROS-free offline tools: segment, evaluate, train, convert, fetch.

Each tool is a module with ``main(argv=None)`` (console scripts ``lseg-<name>``). They share
the model library (``lseg_ros.model``) and never import rclpy.
"""
