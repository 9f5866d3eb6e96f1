"""A product's photo, for people (the review page): fetched by the API under the workers' rules.

A browser cannot load ``s3://`` or ``file://`` URIs, and must not be handed an arbitrary https:// URI
either: the photo is fetched server-side through :class:`shared.fetch.ImageFetcher`, so the same
bucket/host allow-lists, SSRF guard and size and time limits apply as in the workers. Role
``reviewer`` or ``reader`` (or admin).
"""

from __future__ import annotations

import io
import logging
import threading

from fastapi import APIRouter, Depends, Request, Response
from PIL import Image, UnidentifiedImageError

from api.auth import require
from api.errors import AUTH_ERRORS, HttpError, NotFound, responses
from api.guards import GuardedRoute
from api.state import get_state
from shared.db.models import Product
from shared.db.session import session_scope
from shared.fetch import FetchError, ImageFetcher

log = logging.getLogger("tagger.api.images")
router = APIRouter(prefix="/v1", tags=["images"], route_class=GuardedRoute,
                   dependencies=[Depends(require("reviewer", "reader"))])
_fetcher_lock = threading.Lock()


class FetchFailed(HttpError):
    """The product's image could not be fetched (refused by policy, missing, too big, not a picture)."""

    status_code = 502


def _fetcher(request: Request) -> ImageFetcher:
    """One fetcher per app: it keeps its S3 client, which is slow to build, across requests."""
    app_state = request.app.state
    fetcher: ImageFetcher | None = getattr(app_state, "image_fetcher", None)
    if fetcher is None:
        with _fetcher_lock:
            fetcher = getattr(app_state, "image_fetcher", None)
            if fetcher is None:
                # Only fetch() is used, never fetch_many(), so its thread pool never starts a thread.
                fetcher = app_state.image_fetcher = ImageFetcher(get_state(request).settings, threads=1)
    return fetcher


class ImageTooLarge(HttpError):
    """The picture has more pixels than TAGGER_MAX_IMAGE_PIXELS: a decompression bomb is never served."""

    status_code = 422


def _media_type(body: bytes, max_pixels: int) -> str:
    """The picture's MIME type from its own header bytes; anything that is not a picture is refused,
    so a file:// or bucket object holding HTML or script is never served to a browser. Only the header
    is read: a picture over ``max_pixels`` is refused before anything is decompressed."""
    too_large = ImageTooLarge(
        f"image has more than {max_pixels} pixels (max_image_pixels, TAGGER_MAX_IMAGE_PIXELS); not served",
        limit={"name": "max_image_pixels", "value": max_pixels},
    )
    try:
        with Image.open(io.BytesIO(body)) as image:
            fmt = image.format
            width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard (a warning past ~89 Mpx, an error past twice that) fired first.
        raise too_large from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise FetchFailed(f"image is not a readable picture ({type(exc).__name__})") from None
    if width * height > max_pixels:
        raise too_large
    media_type = Image.MIME.get(fmt or "")
    if media_type is None or not media_type.startswith("image/"):
        raise FetchFailed(f"image format {fmt!r} cannot be served")
    return media_type


@router.get(
    "/products/{product_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "The product's photo."},
               **responses(*AUTH_ERRORS, (404, "No product with this id, or it has no image."),
                           (422, "The picture has more pixels than TAGGER_MAX_IMAGE_PIXELS, or product_id "
                                  "holds a control character."),
                           (502, "The image could not be fetched or is not a picture: the reason."))},
)
def product_image(request: Request, product_id: str) -> Response:
    """The product's photo, fetched now from its ``image_uri`` (s3://, allow-listed https://, dev file://)."""
    with session_scope(get_state(request).settings.database_url) as session:
        product = session.get(Product, product_id)
        image_uri = product.image_uri if product is not None else None
    if product is None:
        raise NotFound(f"product {product_id!r} not found")
    if not image_uri:
        raise NotFound(f"product {product_id!r} has no image")
    try:
        body = _fetcher(request).fetch(image_uri)
    except FetchError as exc:
        log.info("image_refused product=%s", product_id)
        raise FetchFailed(f"image of product {product_id!r}: {exc}") from None
    media_type = _media_type(body, get_state(request).settings.max_image_pixels)
    return Response(body, media_type=media_type, headers={
        "Cache-Control": "private, max-age=60",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })
