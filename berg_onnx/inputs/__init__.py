"""What comes in: images and arrays turned into the models' exact input.

- ``stimulus``: validation of every accepted stimulus (arrays, files, PIL images) and the
  preprocessing (exact resize to 227x227) per chunk;
- ``images``: the one file/PIL -> (3, H, W) uint8 conversion (EXIF, 16-bit, alpha);
- ``scan``: the folder scan (which files count as images, what is skipped and why);
- ``resize``: the numpy port of torch's antialiased bilinear resize, bit-exact.
May import ``utils``, ``errors``, ``constants``; never anything above.
"""
