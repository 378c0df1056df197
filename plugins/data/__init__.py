"""Datasets: captioned images with fixed splits."""
