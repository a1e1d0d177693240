"""Layer archives: converting OCI layer tars to overlay layer directories and back.

- ``whiteout``: the one table of rules both directions share (pure, no tarfile).
- ``extract``: ``extract_layer(source, dest)``, a tar or tar.gz stream into a layer dir.
- ``generate``: ``write_layer_tar(src, out)``, a layer or upper dir into a canonical tar;
  ``dir_usage(path)``.

Nothing is imported here, so ``import overlayctl.archive`` stays cheap: ``tarfile``
is loaded only by the modules that read or write tar streams.
"""
