"""store.registries: images between the store and registries (pull, push), and the credentials for them."""

from __future__ import annotations

from ._context import StoreContext
from ._layers import Layers
from ._progress import Progress
from ._pull import PullReport, pull_image
from ._push import PushReport, push_image


class Registries:
    """Pull and push through the OCI distribution protocol; login and logout as Docker keeps them."""

    def __init__(self, ctx: StoreContext, layers: Layers) -> None:
        self._ctx = ctx
        self._layers = layers

    def pull(
        self,
        reference: str,
        *,
        platform: str | None = None,
        insecure: bool = False,
        jobs: int | None = None,
        progress: Progress | None = None,
        keep_blobs: bool = False,
    ) -> PullReport:
        """Pull an image (Docker's reference form; Docker Hub for a bare name).

        Manifests are negotiated (OCI and Docker v2, indexes followed to the
        host's platform or ``platform``); blobs are fetched ``jobs`` at a time
        (default 3), each streamed into the layer it becomes while its digest
        is checked; layers already in the store are not fetched.  Everything
        is published in one transaction, as ``images.load``: on any error the
        store is left as it was, and the blobs received so far stay in the
        download cache, from which the next pull resumes.  ``keep_blobs``
        keeps the image's blobs (also those of layers the store had) and its
        manifest there, for ``push`` and ``images.save`` in the OCI formats
        to reproduce the registry's manifest digest.  A pull by tag tags
        the image with the reference; one by digest leaves it untagged.
        """
        return pull_image(
            self._ctx,
            self._layers,
            reference,
            platform=platform,
            insecure=insecure,
            jobs=jobs,
            progress=progress,
            keep_blobs=keep_blobs,
        )

    def push(
        self,
        source: str,
        destination: str | None = None,
        *,
        compression: str = "gzip",
        insecure: bool = False,
        jobs: int | None = None,
        progress: Progress | None = None,
    ) -> PushReport:
        """Push an image to destination, or to where source's name says.

        Layer blobs are the byte-exact tars ``images.save`` writes, compressed
        with gzip (or zstd), ``jobs`` layers at a time (default 3); blobs the
        registry has are not uploaded.  The store does not change.
        """
        return push_image(
            self._ctx,
            self._layers,
            source,
            destination,
            compression=compression,
            insecure=insecure,
            jobs=jobs,
            progress=progress,
        )

    def login(self, host: str, username: str, password: str, *, insecure: bool = False) -> str:
        """Check the credentials against the registry, then keep them in Docker's config.json; its key."""
        from ..registry.client import RegistryClient
        from ..registry.credentials import Credentials, CredentialStore, registry_key
        from ..registry.reference import api_host

        credentials = Credentials(username, password)
        client = RegistryClient(api_host(host), insecure=insecure, credentials=credentials)
        try:
            client.check_credentials()
        finally:
            client.close()
        CredentialStore().store(host, credentials)
        return registry_key(host)

    def logout(self, host: str) -> bool:
        """Forget the credentials of a registry; False when there were none."""
        from ..registry.credentials import CredentialStore

        return CredentialStore().erase(host)
