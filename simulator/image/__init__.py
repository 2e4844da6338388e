"""Simulator images: a bootable ARM64 initramfs built from package registries, cached by digest.

``build_image()`` (:mod:`.build`) returns an :class:`~.build.Image` (kernel and initramfs) for
``qemu-system-aarch64 -M virt``; :mod:`.recipe` says what goes in and why, :mod:`.fetch` gets it
from Debian and PyPI, :mod:`.cpio` writes the archive.
"""

from .build import Image, build_image, cache_root, cached_image

__all__ = ["Image", "build_image", "cache_root", "cached_image"]
