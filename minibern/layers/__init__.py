"""Layers with hand-derived forward and backward passes (docs/derivations/layers.md)."""
from minibern.layers.activation import ReLU
from minibern.layers.base import Layer
from minibern.layers.conv import Conv2D
from minibern.layers.dense import Dense
from minibern.layers.im2col import col2im, conv_output_size, im2col
from minibern.layers.pool import MaxPool2D
from minibern.layers.reshape import Flatten
from minibern.layers.select import SelectFeatures
from minibern.layers.sequential import Sequential

__all__ = ["Layer", "Dense", "Conv2D", "MaxPool2D", "ReLU", "Flatten", "SelectFeatures", "Sequential",
           "im2col", "col2im", "conv_output_size"]
