"""The crop stage's torch pipeline: what ``crop --device cuda`` runs, and ``crop.pipeline = "torch"`` on a CPU.

Where each step runs, and why:

- **Reading** stays on CPU threads and in media.py, the one gate for untrusted bytes: size limit, regular
  files, format allow-list, pixel limit, all from the header (``media.header``) before any decoder sees them.
- **Decoding**: on CUDA, baseline/progressive RGB or greyscale JPEGs that end in an EOI marker are decoded on
  the GPU in one batched nvjpeg call (``torchvision.io.decode_jpeg``); any other file, and any JPEG nvjpeg
  refuses, goes to media.decode on a CPU thread, exactly as the OpenCV path reads it, so a truncated or odd
  file fails (or decodes) the same way whichever pipeline meets it. On a CPU device every photo takes that
  CPU route, which makes the detections identical to the OpenCV path's.
- **Detection**: MTCNN (faces/detect.py) on batches of ``crop.device_batch_size`` photos, 0 meaning sized
  from the GPU's free memory; the detection copy of a GPU-decoded photo is area-reduced on the GPU.
- **Alignment** (quad resampling, reflect padding, blur and fade) as tensor ops on the device
  (faces/align_torch.py): within a grey level of align.py's OpenCV crops.
- **Encoding and writing** on CPU threads, atomically; each batch is committed in one transaction by crop.py's
  own ``_commit``, so the catalog means the same whichever pipeline wrote it.
"""

from __future__ import annotations

import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from facecurate import media
from facecurate.catalog import Catalog, FaceRecord, ImageRow
from facecurate.device import resolve_device
from facecurate.errors import ImageError
from facecurate.events import Progress
from facecurate.faces import crop_workers
from facecurate.faces.align import Alignment, Placement, align_face, place_face
from facecurate.faces.align_torch import align_faces, image_tensor
from facecurate.faces.crop import CropSummary, _Batch, _commit, _detect
from facecurate.faces.crop_batch import CropOptions, _cut_settings
from facecurate.faces.crop_photo import Face, Limits, decode_copy, face_record
from facecurate.faces.crop_workers import Failed
from facecurate.faces.detect import BatchedDetector
from facecurate.filestore import FileStore, open_store
from facecurate.workspace import Workspace

# Device memory one photo of a batch may need, per pixel of detect_max_side²: MTCNN's cascade ~40 bytes per
# canvas pixel (detect.py's CPU_BATCH_PIXELS note), the decoded photo and its detection copy the rest.
BYTES_PER_DETECT_PIXEL = 48
MEMORY_SHARE = 0.5      # of the free GPU memory: the alignment's float copies and torch's cache need the rest
MAX_AUTO_BATCH = 256    # beyond this a batch only delays the first commit
DECODE_SHARE = 0.25     # of the free GPU memory, for a batch's full-size nvjpeg decodes
# nvjpeg decodes these; CMYK/YCCK JPEGs (Pillow modes CMYK) and camera MPOs go to the CPU decoder.
_DEVICE_MODES = ("RGB", "L")
_EOI = b"\xff\xd9"
# torchvision 0.29 deprecates its decoders for TorchCodec's; nvjpeg through torchvision still works, and the
# notice would otherwise be printed over the progress bars once per run.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def batch_size(opts: CropOptions, device: torch.device) -> int:
    """Photos per batch: ``crop.device_batch_size``, or when 0 as many as half the GPU's free memory holds
    (``crop.batch_size`` on a CPU, whose memory the detector bounds itself)."""
    if opts.device_batch_size > 0:
        return opts.device_batch_size
    if device.type != "cuda":
        return opts.batch_size
    free, _ = torch.cuda.mem_get_info(device)
    per_photo = BYTES_PER_DETECT_PIXEL * opts.detect_max_side ** 2
    return max(1, min(MAX_AUTO_BATCH, int(free * MEMORY_SHARE) // per_photo))


@dataclass
class _Encoded:
    """A JPEG larger than detect_max_side that passed media's header gate: its detection copy decoded on the
    CPU, its bytes for nvjpeg, which decodes the full-size pixels the crops are cut from."""

    data: bytes
    header: media.Header
    copy: media.Decoded


def _read(files: FileStore, row: ImageRow, limits: Limits, max_side: int,
          device_decode: bool) -> _Encoded | media.Decoded | ImageError:
    """A photo's detection copy, decoded on this CPU thread exactly as crop.py's ``_decode`` does, and for a
    JPEG larger than ``max_side`` (with ``device_decode``) its bytes for the device decoder.

    Why the detection copy is never the GPU's: MTCNN's landmarks move by about a pixel when its input changes
    by a grey level or two (a proxy measured while writing this, on the demo photos and 40 dev photos: chroma
    upsampled nearest instead of linear plus +-1 on 30% of values moved landmarks 1.2 px on average and crops
    by 2.1 grey levels MAD), and torchvision's own test allows nvjpeg's pixels a mean difference of up to 2
    from libjpeg's. Crops must not depend on the device, so the detector sees the same pixels on every
    device; libjpeg decodes a large photo's copy DCT-reduced, at a fraction of a full decode, and the full
    decode is the GPU's."""
    if not device_decode:
        return decode_copy(files, row, limits, max_side)
    try:
        data = files.read(row.path, limits.max_bytes)
        head = media.header(data, row.path, limits.max_pixels)
        copy = media.decode(data, row.path, limits.max_pixels, max_side=max_side, budget=limits.budget)
    except ImageError as exc:
        return exc
    if (copy.reduced and head.format == "JPEG" and head.mode in _DEVICE_MODES
            and data.rstrip(b"\0").endswith(_EOI)):
        return _Encoded(data, head, copy)
    return copy


def decode_on_device(items: list[_Encoded], device: torch.device) -> list[torch.Tensor | None]:
    """(3, H, W) uint8 RGB tensors on ``device`` after EXIF orientation, None where the decoder refused a file.

    One batched call first (nvjpeg decodes a list together); if it raises, each file alone, so one bad file
    costs only itself. torchvision.io is imported here: it takes a while and only this path needs it."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not items:
        return []
    raw = [torch.frombuffer(bytearray(it.data), dtype=torch.uint8) for it in items]
    decoded: list[torch.Tensor | None]
    try:
        decoded = list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        decoded = []
        for one in raw:
            try:
                decoded.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    out: list[torch.Tensor | None] = []
    for it, img in zip(items, decoded, strict=True):
        w, h = it.header.stored_size
        ok = img is not None and img.ndim == 3 and tuple(img.shape) == (3, h, w)
        out.append(orient(img, it.header.orientation) if ok and img is not None else None)
    return out


def orient(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """``ImageOps.exif_transpose`` on a (3, H, W) tensor: the photo as displayed, as media.decode returns it."""
    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-1).flip(-2)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(img, -1, dims=(-2, -1))
    if orientation == 7:
        return img.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return torch.rot90(img, 1, dims=(-2, -1))
    return img


def run_torch_crop(ws: Workspace, catalog: Catalog, opts: CropOptions, rows: list[ImageRow], limits: Limits,
                   progress: Progress, *, device_decode: bool | None = None) -> CropSummary:
    """crop.py's ``run_crop`` for ``rows``, on the torch pipeline (module docstring). ``device_decode``: JPEGs
    through torchvision's decoder on the device; default on CUDA only (tests force it on a CPU, where
    torchvision decodes with libjpeg, to run that path without a GPU)."""
    device = resolve_device(opts.device)
    if device_decode is None:
        device_decode = device.type == "cuda"
    size = batch_size(opts, device)
    detector = BatchedDetector(device=opts.device, batch_size=size, max_side=opts.detect_max_side,
                               min_face_size=opts.min_face_size)
    summary = CropSummary(device=str(detector.device))
    progress.start(f"crop ({summary.device}, torch)", len(rows), "img")
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    files = open_store(ws)
    with ThreadPoolExecutor(max_workers=4) as pool:
        def read(chunk: list[ImageRow]) -> list[Future[_Encoded | media.Decoded | ImageError]]:
            return [pool.submit(_read, files, r, limits, opts.detect_max_side, device_decode) for r in chunk]

        upcoming = read(chunks[0]) if chunks else None
        for i, chunk in enumerate(chunks):
            reads, upcoming = upcoming, read(chunks[i + 1]) if i + 1 < len(chunks) else None
            assert reads is not None
            _run_batch(files, catalog, opts, chunk, [f.result() for f in reads], device, limits, pool, detector,
                       summary)
            progress.advance(len(chunk))
    progress.finish()
    return summary


def _run_batch(files: FileStore, catalog: Catalog, opts: CropOptions, rows: list[ImageRow],
               reads: list[_Encoded | media.Decoded | ImageError], device: torch.device, limits: Limits,
               pool: ThreadPoolExecutor, detector: BatchedDetector, summary: CropSummary) -> None:
    encoded = _within_device_room([(j, r) for j, r in enumerate(reads) if isinstance(r, _Encoded)], device)
    # None where nvjpeg refused the file: it is then decoded in full on the CPU when cut, as a reduced copy
    # is on the OpenCV path
    on_device = {j: img for (j, _), img in zip(encoded, decode_on_device([r for _, r in encoded], device),
                                                strict=True) if img is not None}
    copies: list[Future[media.Decoded | ImageError]] = []
    for r in reads:
        done: Future[media.Decoded | ImageError] = Future()
        done.set_result(r.copy if isinstance(r, _Encoded) else r)
        copies.append(done)
    batch = _Batch(rows, copies)
    for j, copy, chosen in _detect(detector, batch, opts):  # the same looks and choices as the OpenCV path
        batch.jobs[j] = pool.submit(_crop_or_failure, files, rows[j], copy, on_device.get(j), chosen, opts, limits,
                                    device)
    _commit(catalog, batch, summary)


def _within_device_room(encoded: list[tuple[int, _Encoded]], device: torch.device) -> list[tuple[int, _Encoded]]:
    """The photos whose full-size pixels fit in DECODE_SHARE of the GPU's free memory, in batch order; the rest
    are decoded in full on the CPU when cut (the batch size follows detect_max_side, not the photos' sizes,
    and a batch of 50 MP photos would not fit a small GPU)."""
    if device.type != "cuda":
        return encoded
    room = int(torch.cuda.mem_get_info(device)[0] * DECODE_SHARE)
    kept = []
    for j, item in encoded:
        w, h = item.header.stored_size
        room -= 3 * w * h
        if room < 0:
            break
        kept.append((j, item))
    return kept


def _crop_or_failure(files: FileStore, row: ImageRow, copy: media.Decoded, image: torch.Tensor | None,
                     chosen: list[Face], opts: CropOptions, limits: Limits,
                     device: torch.device) -> list[FaceRecord] | Failed:
    try:
        return _crop_photo(files, row, copy, image, chosen, opts, limits, device)
    except (ValueError, OSError, ImageError) as exc:  # one odd face must not stop the run
        return Failed(crop_workers.crop_failure(row, exc), "crop_failed")


def _crop_photo(files: FileStore, row: ImageRow, copy: media.Decoded, image: torch.Tensor | None,
                chosen: list[Face], opts: CropOptions, limits: Limits, device: torch.device) -> list[FaceRecord]:
    """Cut, encode, then write one photo's faces (crop.py's ``_crop_image`` on the device). A photo decoded
    on the CPU as a reduced copy is decoded again in full here, under the pixel budget, as there."""
    if image is not None:
        cuts = _cut_all(image, copy.source_size, chosen, opts)
    elif copy.reduced:
        data = files.read(row.path, limits.max_bytes)
        with media.decoded(data, row.path, limits.max_pixels, limits.budget) as full:
            cuts = _cut_all(full.pixels, copy.source_size, chosen, opts, device)
    else:
        cuts = _cut_all(copy.pixels, copy.source_size, chosen, opts, device)
    cut = _cut_settings(opts)
    records = []
    blobs = []
    for k, (det, aligned) in enumerate(zip(chosen, cuts, strict=True)):
        blobs.append(media.encode(aligned.crop, opts.image_format, opts.jpeg_quality))
        records.append(face_record(row, k, det, aligned, cut))
    for record, blob in zip(records, blobs, strict=True):
        files.write(record.crop_path, blob)
    return records


def _cut_all(image: torch.Tensor | np.ndarray, source_size: tuple[int, int], chosen: list[Face],
             opts: CropOptions, device: torch.device | None = None) -> list[Alignment]:
    """Every chosen face of one photo, aligned on the image's device (a host array is moved to ``device``).

    ``crop.alignment = "ffhq"`` (the published script's pixels, Pillow's 4x QUAD transform) has no tensor
    version: those crops are cut by align.py on the host. A device out of memory retries on the CPU with the
    same tensor code rather than failing the photo."""
    width, height = source_size
    places = [place_face(d.landmarks, width, height, opts.size, opts.headroom) for d in chosen]
    if opts.alignment == "ffhq":
        pixels = image if isinstance(image, np.ndarray) else image.permute(1, 2, 0).cpu().numpy()
        return [align_face(pixels, d.landmarks, size=opts.size, headroom=opts.headroom, padding=opts.padding,
                           alignment="ffhq") for d in chosen]
    tensor = image_tensor(image, device or "cpu") if isinstance(image, np.ndarray) else image
    if (int(tensor.shape[2]), int(tensor.shape[1])) != (width, height):
        raise ValueError(f"decoded {tuple(tensor.shape)} does not match the photo's size {width}x{height}")
    try:
        try:
            crops = align_faces(tensor, places, opts.size, opts.padding)
        except torch.OutOfMemoryError:
            crops = align_faces(tensor.cpu(), places, opts.size, opts.padding)
    except RuntimeError as exc:  # a device failure is this photo's, recorded like any other (crop.py's _commit)
        raise ValueError(f"the torch alignment failed ({type(exc).__name__}: {exc})") from exc
    host = crops.permute(0, 2, 3, 1).cpu().numpy()
    return [_alignment(place, host[k]) for k, place in enumerate(places)]


def _alignment(place: Placement, crop: np.ndarray) -> Alignment:
    return Alignment(quad=place.quad, crop=np.ascontiguousarray(crop), oob_fraction=place.oob_fraction,
                     above_fraction=place.above_fraction, side_fraction=place.side_fraction,
                     eye_angle_deg=place.eye_angle_deg)
