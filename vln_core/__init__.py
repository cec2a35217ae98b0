"""vln_core: all logic of vln_heatmap (geometry, sampling, data, models, training, runtime).

Nothing here imports ROS; the ROS 2 package, the training scripts and the exporters are thin
layers over this package.
"""
__version__ = "0.1.0"
