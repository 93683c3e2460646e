"""Backprop Studio's engine: block graphs, shape inference, forward and backward passes,
training, files and the headless CLI. Pure numpy/numba/scipy/networkx; never imports Qt."""

__version__ = "0.1.0"
