"""Running an evaluation: load the model and codecs, code every image at every point still missing
from the store to real bytes, decode, measure, and hand the rows to the report.

Why apart from the report: this is the part that needs torch and costs minutes per image, so it
is the part that asks the store (:meth:`Store.is_complete`) what to skip. Each q is encoded once
and the file decoded at every β, so the β of one q share their bytes; the rate of a row is the
length of that real file, and the likelihood estimate (:func:`estimated_bits`) is kept beside it
because the gap is the entropy coder's overhead. The data flow of one image is drawn in the
package docstring (:mod:`crdr.evaluate`); :func:`evaluate` below reads top to bottom.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from crdr import files
from crdr.errors import CrdrError, FormatError, ParameterError
from crdr.evaluate.plan import (
    CRDR,
    DEFAULT_BASELINES,
    DEFAULT_BETAS,
    DEFAULT_FID_FEATURES,
    DEFAULT_METRICS,
    DEFAULT_Q,
    IMAGE_METRICS,
    SET_METRICS,
    BaselinePoint,
    CrdrPoint,
    Request,
    baseline_points,
    crdr_points,
    parse_request,
    published_points,
    report_folder,
    slug,
    value_text,
)
from crdr.evaluate.report import EvaluationReport, RunFacts, summarise_points, write_report
from crdr.evaluate.store import Store

# Report columns of the perceptual metrics → their names in crdr.metrics.
_PERCEPTUAL = {"ST-LPIPS": "st-lpips", "LPIPS": "lpips", "DISTS": "dists"}


# ---------------------------------------------------------------------------------------------
# evaluate(): the run from top to bottom
# ---------------------------------------------------------------------------------------------


def _print_notice(message: str) -> None:
    print(f"crdr: note: {message}", file=sys.stderr)


def evaluate(
    dataset_dir: str | os.PathLike,
    model=None,
    *,
    q_values: str | Sequence[float] = DEFAULT_Q,
    betas: str | Sequence[float] = DEFAULT_BETAS,
    baselines: str | Sequence[str] = DEFAULT_BASELINES,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    fid_features: str = DEFAULT_FID_FEATURES,
    report_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    paper: str | None = "auto",
    tile_size: int | None = None,
    keep_files: bool = False,
    progress: bool = True,
    plots: bool = True,
    threads: int | None = None,
    notify: Callable[[str], None] | None = _print_notice,
    device="cpu",
) -> EvaluationReport:
    """Evaluate ``model`` (a :class:`~crdr.models.crdr.CRDR`, a weights file or bundled name; or
    ``None`` for baselines only) and ``baselines`` on the images of ``dataset_dir``.

    ``q_values``/``betas``: ``"0:4:0.25"``-style grids or sequences; ``baselines``: names from
    :data:`crdr.baselines.CODEC_NAMES` (``"none"`` or empty for none); ``metrics``: names
    from ``psnr, ms-ssim, stlpips, lpips, dists, fid, kid``; ``fid_features``: ``inception-v3``
    (published FID) or ``alexnet-stlpips`` (offline stand-in, labelled as such); ``report_dir``
    defaults to ``reports/<dataset folder name>``; ``paper``: ``"auto"`` (Kodak is detected),
    ``"kodak"``, ``"clic"``, ``"div2k"`` or ``None``/``"none"`` to overlay the published points.
    Unknown names raise :class:`ParameterError`; unavailable metrics and codecs are skipped
    with a notice (passed to ``notify`` and kept in ``report.notices``). ``threads`` sets torch's
    intra-op threads for the run (restored afterwards); on a busy machine 1 is often fastest.
    ``plots=False`` skips the figures (the slowest part of a small run). ``device``: where crdr's
    analysis and synthesis transforms run (:func:`crdr.codec.resolve_device`); the estimated
    bits come from a CPU forward pass whatever it is.
    """
    from crdr import codec

    device = codec.resolve_device(device)
    with _torch_threads(threads):
        started = time.perf_counter()
        notices: list[str] = []
        note = _notifier(notices, notify)
        request = parse_request(dataset_dir, q_values=q_values, betas=betas, baselines=baselines, metrics=metrics,
                                fid_features=fid_features, limit=limit)
        crdr_model, q_grid, beta_grid = _load_model(model, request, note)
        codecs = _load_baselines(request.baselines, note)
        if crdr_model is None and not codecs:
            raise ParameterError("nothing to evaluate: no crdr model and no available baseline")
        measures = Measures(request.columns, request.fid_features, note)
        if not measures.image_columns and not measures.set_columns:
            raise CrdrError("none of the requested metrics is available here (see the notes above)")
        paper_name, paper_points = published_points(paper, request, note)
        folder = report_folder(report_dir, request.root)
        folder.mkdir(parents=True, exist_ok=True)
        model_hex = codec.model_identity(crdr_model).hex() if crdr_model is not None else ""
        store = _open_store(folder, measures, model_hex, note)

        coded_crdr = crdr_points(q_grid, beta_grid)
        coded_baselines = baseline_points(codecs)
        keys = [key for image in request.names for key in _keys(image, coded_crdr, coded_baselines)]
        pending = store.pending(keys)
        coding = _Coding(model=crdr_model, model_hex=model_hex, measures=measures, store=store, tile_size=tile_size,
                         device=device, kept_dir=folder / "files" if keep_files else None,
                         bar=_progress_bar(pending) if progress else None)
        encoded, decoded = _measure_all(coding, request, coded_crdr, coded_baselines, note)

        points = summarise_points(coded_crdr, coded_baselines, store, request.names,
                                  image_columns=measures.image_columns, set_columns=measures.set_columns,
                                  extractor=measures.extractor_name, note=note)
        facts = RunFacts(
            request=request, has_crdr=crdr_model is not None, model_source=getattr(crdr_model, "source", None),
            model_hex=model_hex, q_grid=q_grid, beta_grid=beta_grid, codecs=codecs,
            image_columns=measures.image_columns, set_columns=measures.set_columns,
            extractor=measures.extractor_name, paper_name=paper_name, paper_points=paper_points, notices=notices,
            encoded=encoded, decoded=decoded, skipped=len(keys) - pending, started=started,
        )
        return write_report(folder, store.csv_path, points, facts, plots)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` (if given) for the block, then restored."""
    import torch

    if threads is not None and threads < 1:
        raise ParameterError(f"threads must be ≥ 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _notifier(notices: list[str], notify: Callable[[str], None] | None) -> Callable[[str], None]:
    def note(message: str) -> None:
        notices.append(message)
        if notify is not None:
            notify(message)

    return note


def _load_model(model, request: Request, note: Callable[[str], None]):
    """The crdr model in eval mode and the q and β grids it codes (None and empty grids for
    baselines only): a single-rate model codes q=0 only, one without β conditioning decodes β=0
    only. Every grid value is checked against the model's ranges here, before any work."""
    from crdr import codec

    if model is None:
        return None, (), ()
    q_grid, beta_grid = request.q_grid, request.beta_grid
    crdr_model = codec.get_model(model)
    if crdr_model.training:
        crdr_model.eval()
    config = crdr_model.config
    if not config.variable_rate and len(q_grid) > 1:
        note("model is single-rate: q grid reduced to q=0")
        q_grid = (0.0,)
    if not config.beta_conditioned and beta_grid != (0.0,):
        note("model has no β conditioning: β grid reduced to β=0")
        beta_grid = (0.0,)
    for q in q_grid:
        crdr_model.q_tensor(q)
    for beta in beta_grid:
        crdr_model.beta_tensor(beta)
    return crdr_model, q_grid, beta_grid


def _load_baselines(names: Sequence[str], note: Callable[[str], None]) -> list:
    """The baseline codecs that work here; each missing one is skipped with a notice."""
    from crdr import baselines

    codecs = []
    for name in names:
        try:
            codecs.append(baselines.get_codec(name))
        except baselines.CodecUnavailable as error:
            note(f"{error}: skipped")
    return codecs


def _open_store(folder: Path, measures: Measures, model_hex: str, note: Callable[[str], None]) -> Store:
    """The store of ``folder``; refused if it holds crdr results of a model other than
    ``model_hex`` (``""``: no crdr in this run, nothing to compare)."""
    store = Store(folder, measures.image_columns, measures.extractor_name if measures.set_columns else None)
    if store.dropped:
        note(f"{store.csv_path}: {store.dropped} malformed row(s) dropped; they will be recomputed")
    others = store.other_models(model_hex) if model_hex else set()
    if others:
        raise CrdrError(
            f"{store.csv_path} holds crdr results of another model ({', '.join(sorted(others))}); "
            f"use another report folder (-o) for model {model_hex}"
        )
    return store


def _keys(image: str, coded_crdr: Sequence[CrdrPoint], coded_baselines: Sequence[BaselinePoint]) -> list[tuple]:
    """The store keys of one image: (image, codec, point) for every point."""
    return ([(image, CRDR, point.label) for point in coded_crdr]
            + [(image, point.codec.name, point.label) for point in coded_baselines])


def _progress_bar(pending: int):
    """A tqdm bar over the rows to compute (None when there are none)."""
    if not pending:
        return None
    from tqdm import tqdm

    return tqdm(total=pending, unit="row", file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


class Measures:
    """The per-image metrics that work here, and the FID/KID feature extractor (or None).

    ``image_columns``/``set_columns``: the requested per-image and set metrics that are
    available; a missing one is reported through ``notify`` and left out.
    """

    def __init__(self, columns: Sequence[str], fid_features: str, notify: Callable[[str], None]) -> None:
        from crdr import metrics

        self.image_columns: list[str] = []
        self.perceptual: dict[str, object] = {}
        for column in (c for c in columns if c in IMAGE_METRICS):
            if column == "MS-SSIM":
                status = {s.name: s for s in metrics.available_metrics()}["ms-ssim"]
                if not status.available:
                    notify(f"{status.reason}: skipped")
                    continue
            elif column in _PERCEPTUAL:
                try:
                    self.perceptual[column] = metrics.perceptual_metric(_PERCEPTUAL[column])
                except metrics.MetricUnavailable as error:
                    notify(f"{error}: skipped")
                    continue
            self.image_columns.append(column)
        self.set_columns = [column for column in columns if column in SET_METRICS]
        self.extractor = None
        if self.set_columns:
            try:
                self.extractor = metrics.get_feature_extractor(fid_features)
            except metrics.MetricUnavailable as error:
                notify(f"{'/'.join(self.set_columns)} skipped: {error} "
                       f"(or use --fid-features alexnet-stlpips, an offline stand-in)")
                self.set_columns = []

    @property
    def extractor_name(self) -> str:
        return self.extractor.name if self.extractor is not None else ""

    def image_metrics(self, reference: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
        from crdr import metrics

        values: dict[str, float] = {}
        for column in self.image_columns:
            if column == "PSNR":
                values[column] = metrics.psnr(reference, decoded)
            elif column == "MS-SSIM":
                values[column] = metrics.ms_ssim(reference, decoded)
            else:
                values[column] = self.perceptual[column](reference, decoded)
        return values

    def features(self, rgb: np.ndarray) -> np.ndarray:
        """``(patches, D)`` float64 features of the HiFiC patches of ``rgb`` (``(0, 0)`` if none)."""
        from crdr import metrics

        patches = metrics.hific_patches(rgb)
        if len(patches) == 0:
            return np.zeros((0, 0), np.float64)
        return np.asarray(self.extractor(patches), dtype=np.float64)


def estimated_bits(model, rgb: np.ndarray, q: float) -> float:
    """``−Σ log2 p`` of the rounded latents (y and z) from one eval-mode forward pass."""
    import torch

    from crdr import codec, image_io

    x = codec.pad_to_stride(image_io.to_model_input(rgb))
    with torch.no_grad():
        result = model(x, q, 0.0)
    return float(result.bits()[0])


@dataclass(frozen=True)
class _Coding:
    """What coding an image needs besides the image; the same for the whole run.

    ``model``: crdr in eval mode, or None; ``kept_dir``: where coded files are kept (None: not
    kept); ``bar``: the progress bar, or None.
    """

    model: object
    model_hex: str
    measures: Measures
    store: Store
    tile_size: int | None
    device: object
    kept_dir: Path | None
    bar: object


def _measure_all(coding: _Coding, request: Request, coded_crdr: Sequence[CrdrPoint],
                 coded_baselines: Sequence[BaselinePoint], note: Callable[[str], None]) -> tuple[int, int]:
    """Code and measure what the store lacks, image by image, saving the store after each; the
    number of files encoded and decoded."""
    encoded = decoded = 0
    try:
        for path, image in zip(request.images, request.names):
            todo_crdr = [point for point in coded_crdr if not coding.store.is_complete((image, CRDR, point.label))]
            todo_baselines = [point for point in coded_baselines
                              if not coding.store.is_complete((image, point.codec.name, point.label))]
            if not todo_crdr and not todo_baselines:
                continue
            counts = _measure_image(coding, path, image, todo_crdr, todo_baselines, note)
            encoded, decoded = encoded + counts[0], decoded + counts[1]
            coding.store.save()
    finally:
        if coding.bar is not None:
            coding.bar.close()
        coding.store.save()
    return encoded, decoded


def _measure_image(coding: _Coding, path: Path, image: str, todo_crdr: Sequence[CrdrPoint],
                   todo_baselines: Sequence[BaselinePoint], note: Callable[[str], None]) -> tuple[int, int]:
    """Code one image at the given points; the number of files encoded and decoded."""
    from crdr import image_io

    if coding.bar is not None:
        coding.bar.set_description(image)
    source = image_io.load_image(path)
    for message in source.notes:
        note(f"{image}: {message}")
    source = dataclasses.replace(source, alpha=None)  # every codec codes the same RGB pixels
    reference = coding.store.reference_path(image)
    if coding.measures.set_columns and not reference.exists():
        _save_features(reference, coding.measures.features(source.rgb))
    crdr_counts = _measure_crdr(coding, image, source, todo_crdr)
    baseline_counts = _measure_baselines(coding, image, source.rgb, todo_baselines)
    return crdr_counts[0] + baseline_counts[0], crdr_counts[1] + baseline_counts[1]


def _measure_crdr(coding: _Coding, image: str, source, todo: Sequence[CrdrPoint]) -> tuple[int, int]:
    """Encode ``source`` once per q of ``todo`` and decode each file at its β."""
    from crdr import bitstream, codec

    rgb = source.rgb
    height, width = rgb.shape[:2]
    pixels = width * height
    encoded = decoded = 0
    for q in sorted({point.q for point in todo}):
        tic = time.perf_counter()
        data = codec.encode_at(source, q, coding.model, coding.tile_size, device=coding.device)
        encode_s = time.perf_counter() - tic
        encoded += 1
        estimate = estimated_bits(coding.model, rgb, q)
        _keep(coding, CRDR, f"q={value_text(q)}", image, data, ".crdr")
        container = bitstream.unpack(data)
        for point in (p for p in todo if p.q == q):
            tic = time.perf_counter()
            decoded_rgb = codec.decode_container(container, coding.model, point.beta, device=coding.device).rgb
            decode_s = time.perf_counter() - tic
            decoded += 1
            _record(coding, (image, CRDR, point.label), {
                "q": q, "beta": point.beta, "width": width, "height": height, "bytes": len(data),
                "bpp": len(data) * 8 / pixels, "bpp_estimated": estimate / pixels,
                "encode_s": encode_s, "decode_s": decode_s, "model": coding.model_hex,
            }, rgb, decoded_rgb)
    return encoded, decoded


def _measure_baselines(coding: _Coding, image: str, rgb: np.ndarray, todo: Sequence[BaselinePoint]) -> tuple[int, int]:
    """Encode and decode ``rgb`` with each baseline at each quality of ``todo``."""
    height, width = rgb.shape[:2]
    pixels = width * height
    for baseline, quality, label in todo:
        tic = time.perf_counter()
        data = baseline.encode(rgb, quality)
        encode_s = time.perf_counter() - tic
        _keep(coding, baseline.name, label, image, data, baseline.extension)
        tic = time.perf_counter()
        decoded_rgb = baseline.decode(data)
        decode_s = time.perf_counter() - tic
        if decoded_rgb.shape != rgb.shape:
            raise FormatError(f"{baseline.name} decoded {image} to {decoded_rgb.shape}, not {rgb.shape}")
        _record(coding, (image, baseline.name, label), {
            "quality": quality, "width": width, "height": height, "bytes": len(data),
            "bpp": len(data) * 8 / pixels, "encode_s": encode_s, "decode_s": decode_s,
        }, rgb, decoded_rgb)
    return len(todo), len(todo)


def _record(coding: _Coding, key: tuple, cells: dict, reference: np.ndarray, decoded_rgb: np.ndarray) -> None:
    """Measure one decoded image against its original and store its row (and features)."""
    values = coding.measures.image_metrics(reference, decoded_rgb)
    if coding.measures.set_columns:
        image, codec_name, point = key
        _save_features(coding.store.feature_path(codec_name, point, image), coding.measures.features(decoded_rgb))
    coding.store.put(key, {**cells, **values})
    if coding.bar is not None:
        coding.bar.update(1)


def _save_features(path: Path, features: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomically: an existing feature file is what tells a rerun that this row is complete.
    with files.atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, features)


def _keep(coding: _Coding, codec_name: str, point: str, image: str, data: bytes, extension: str) -> None:
    """With ``--keep-files``: ``files/<codec>/<point>/<image><extension>``."""
    if coding.kept_dir is None:
        return
    target = coding.kept_dir / slug(codec_name) / slug(point) / (slug(str(Path(image).with_suffix(""))) + extension)
    target.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(target, data)
