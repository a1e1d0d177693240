"""Layer archives: converting OCI layer tars to overlay layer directories and back.

- ``whiteout``: the one table of rules both directions share (pure, no tarfile).
- ``extract``: ``extract_layer(source, dest)``, a tar or tar.gz stream into a layer dir.
- ``generate``: ``write_layer_tar(src, out)``, a layer or upper dir into a canonical tar;
  ``dir_usage(path)``.
- ``tarsplit``: the tar-split file format (what regenerates an imported tar byte for
  byte from the layer's files); ``_splitter`` records it during ``extract_layer``;
  ``regenerate``: ``write_original_tar(diff, tar_split, out, diff_id)``.

Nothing is imported here, so ``import overlayctl.archive`` stays cheap: ``tarfile``
is loaded only by the modules that read or write tar streams.
"""
