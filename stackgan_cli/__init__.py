"""StackGAN text-to-image synthesis as a command-line tool."""

__version__ = "0.1.0"
