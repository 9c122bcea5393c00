"""Reconstruction methods and the method registry."""
