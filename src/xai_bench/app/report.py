"""A self-contained HTML report of one or more stores: maps over their inputs, scores, metrics, NAPs.

The page works offline (inline CSS and script, images beside it in ``img/``) and stays light
for hundreds of samples: samples come in pages, and an image is fetched only when its page is
shown (``loading="lazy"`` on hidden pages loads nothing).
"""

from __future__ import annotations

import html
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm import tqdm

from ..api.outputs import stored_output
from ..core.errors import InvalidParameterError
from ..storage.datasets import map_layer, method_ids, select_map, targets_of
from ..storage.zarr_io import open_maps
from .viz import (
    _score,
    colour_limit,
    display_image,
    metrics_table,
    overlay,
    plot_dead_feature_maps,
    plot_naps,
    profiled_layers,
)

StoresArg = Sequence["str | os.PathLike[str] | xr.Dataset"] | Mapping[str, "str | os.PathLike[str] | xr.Dataset"]

_SCALE = (
    "Each map is drawn over its input on its own colour scale: limits at the {p:g}th percentile of |map|, "
    "signed maps on a diverging scale centred at zero (red raises the target's score, blue lowers it), "
    "unsigned maps (zero and up) from dark to bright; the map weighs {a:g} in the blend."
)


# Marks a folder as a report, the only kind of folder report() replaces.
_MARK = ".xai_bench_report"


@dataclass
class _Store:
    name: str
    ds: xr.Dataset
    kind: str  # "maps" or "profile"


def report(
    stores: StoresArg,
    out: str | os.PathLike[str] = "report",
    *,
    title: str = "xai_bench report",
    per_page: int = 20,
    percentile: float = 99.0,
    alpha: float = 0.5,
    truth: Mapping[Any, Sequence[Any]] | None = None,
    progress: bool = False,
) -> Path:
    """Write an HTML report of ``stores`` into the folder ``out`` and return its ``index.html``.

    ``stores`` are zarr stores (paths) or Datasets: stores of maps (from :func:`xai_bench.run` or
    :func:`xai_bench.explain`), shown side by side per sample (e.g. one store per model), and
    profile stores (from :func:`xai_bench.profile`), shown as NAP figures and dead feature maps.
    Give a mapping ``{name: store}`` to name them; by default a store is named by its file name.
    Per sample the page shows, for every store and target, the input and each method's map over
    it with the target's score; metric results in a store (``xai-bench evaluate``) become tables,
    each metric marked with the direction that is better. A target is marked "true" when ``truth``
    (``{sample id: its true targets}``) lists it and "predicted" when a multilabel store's score
    passes its threshold; "true and predicted" when both.
    ``per_page`` samples make a page. ``out`` is replaced as a whole when it was a report before.
    """
    if not isinstance(per_page, int) or isinstance(per_page, bool) or per_page < 1:
        raise InvalidParameterError(f"per_page must be a positive integer, got {per_page!r}.")
    if not 0.0 <= alpha <= 1.0:
        raise InvalidParameterError(f"alpha must be between 0 and 1, got {alpha!r}.")
    opened = _open(stores)
    maps = [s for s in opened if s.kind == "maps"]
    profiles = [s for s in opened if s.kind == "profile"]
    target = Path(out)
    if target.exists() and not (target / _MARK).exists():
        raise InvalidParameterError(
            f"{os.fspath(target)!r} exists and is not a report written by xai_bench; choose another --out."
        )
    building = target.with_name(f".{target.name}.partial")
    shutil.rmtree(building, ignore_errors=True)
    (building / "img").mkdir(parents=True)
    samples = _samples(maps)
    pages = max(1, math.ceil(len(samples) / per_page))
    body = [f"<h1>{_e(title)}</h1>", _contents(samples, maps, profiles)]
    body.append(_summary(maps, profiles, samples, pages, per_page))
    if maps:
        body.append(f"<p class='scale'>{_e(_SCALE.format(p=percentile, a=alpha))}</p>")
    if any(_has_metrics(s.ds) for s in maps):
        body += ["<h2 id='metrics'>Metrics</h2>", *(_metrics(s) for s in maps if _has_metrics(s.ds))]
    if profiles:
        body += ["<h2 id='profiles'>Profiles</h2>", *(_profile(s, building / "img", i) for i, s in enumerate(profiles))]
    if samples:
        body.append("<h2 id='samples'>Samples</h2>")
        body.append(_pager(pages))
        bar = tqdm(total=len(samples), desc="report", unit="sample", disable=not progress)
        for position, sample in enumerate(samples):
            body.append(_sample(sample, position, position // per_page, maps, building / "img", percentile, alpha,
                                truth))  # fmt: skip
            bar.update(1)
        bar.close()
        body.append(_pager(pages))
    (building / "index.html").write_text(_page(title, "\n".join(body)), encoding="utf-8")
    (building / _MARK).write_text("A report written by xai_bench.report; writing the report again replaces it.\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(building, target)
    return target / "index.html"


def _open(stores: StoresArg) -> list[_Store]:
    named = list(stores.items()) if isinstance(stores, Mapping) else _default_names(stores)
    opened = []
    for name, store in named:
        if isinstance(store, xr.Dataset):
            ds, label = store, name or f"dataset {len(opened) + 1}"
        else:
            path = Path(store)
            if not path.exists():
                raise FileNotFoundError(f"no store at {os.fspath(path)!r}.")
            ds = open_maps(path) if method_ids(xr.open_zarr(path)) else xr.open_zarr(path)
            label = name or path.name.removesuffix(".zarr")
        if method_ids(ds):
            opened.append(_Store(str(label), ds, "maps"))
        elif "dead_share" in ds or any(str(v).endswith("_group_mean") for v in ds.data_vars):
            opened.append(_Store(str(label), ds, "profile"))
        else:
            raise InvalidParameterError(f"{label}: neither maps nor profiles; a report shows stores of run or profile.")
    if not opened:
        raise InvalidParameterError("no stores given: pass at least one store of maps or profiles.")
    if len({s.name for s in opened}) != len(opened):
        raise InvalidParameterError("two stores share a name: pass {name: store} to tell them apart.")
    return opened


def _default_names(stores: Sequence[Any]) -> list[tuple[str | None, Any]]:
    """A store is named by its file name, or by its folder and file name where file names repeat."""
    stems = [Path(s).name.removesuffix(".zarr") if not isinstance(s, xr.Dataset) else None for s in stores]
    return [
        (f"{Path(s).parent.name}/{stem}" if stem is not None and stems.count(stem) > 1 else stem, s)
        for s, stem in zip(stores, stems, strict=True)
    ]


def _samples(maps: list[_Store]) -> list[Any]:
    """Every sample of the map stores, the first store's order first; only done samples of a store."""
    seen: dict[Any, None] = {}
    for store in maps:
        values = store.ds["sample"].values
        done = store.ds["done"].values if "done" in store.ds else np.ones(len(values), dtype=bool)
        for sample, ok in zip(values, done, strict=True):
            if ok:
                seen.setdefault(sample.item() if hasattr(sample, "item") else sample, None)
    return list(seen)


def _contents(samples: list[Any], maps: list[_Store], profiles: list[_Store]) -> str:
    # The order of the sections on the page.
    links = [("metrics", "Metrics")] if any(_has_metrics(s.ds) for s in maps) else []
    links += [("profiles", "Profiles")] if profiles else []
    links += [("samples", "Samples")] if samples else []
    return "<nav class='contents'>" + " · ".join(f"<a href='#{i}'>{t}</a>" for i, t in links) + "</nav>"


def _summary(maps: list[_Store], profiles: list[_Store], samples: list[Any], pages: int, per_page: int) -> str:
    rows = []
    for s in maps:
        attrs = s.ds.attrs
        rows.append(
            f"<tr><td>{_e(s.name)}</td><td>maps</td><td>{_e(attrs.get('model', '?'))}</td>"
            f"<td>{s.ds.sizes['sample']}</td><td>{_e(', '.join(method_ids(s.ds)))}</td>"
            f"<td><details><summary>provenance</summary><pre>{_e(_provenance(attrs))}</pre></details></td></tr>"
        )
    for s in profiles:
        attrs = s.ds.attrs
        groups = ", ".join(str(g) for g in s.ds["group"].values) if "group" in s.ds.coords else ""
        rows.append(
            f"<tr><td>{_e(s.name)}</td><td>profiles</td><td>{_e(attrs.get('model', '?'))}</td>"
            f"<td>{_e(attrs.get('samples', '?'))}</td><td>groups: {_e(groups)}</td>"
            f"<td><details><summary>provenance</summary><pre>{_e(_provenance(attrs))}</pre></details></td></tr>"
        )
    head = "<tr><th>store</th><th>holds</th><th>model</th><th>samples</th><th>methods</th><th></th></tr>"
    paging = f"{len(samples)} samples on {pages} page{'s' * (pages > 1)} of {per_page}." if samples else ""
    return f"<table class='summary'>{head}{''.join(rows)}</table><p>{paging}</p>"


def _provenance(attrs: Mapping[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in attrs.items() if k != "layers")


def _has_metrics(ds: xr.Dataset) -> bool:
    return any("metric" in var.attrs for var in ds.data_vars.values())


def _metrics(store: _Store) -> str:
    table = metrics_table(store.ds)
    better = {
        var.attrs["metric"]: bool(var.attrs["higher_is_better"])
        for var in store.ds.data_vars.values()
        if "metric" in var.attrs and "higher_is_better" in var.attrs
    }
    shown = table.copy()
    for metric in table.columns:
        shown[metric] = _distinct(table[metric].to_numpy(dtype=float))
    shown.columns = [
        f"{metric} ({'higher' if better[metric] else 'lower'} is better)" if metric in better else metric
        for metric in table.columns
    ]
    note = "Mean over the scored sample and target pairs, per method; each metric says which direction is better."
    return f"<h3>{_e(store.name)}</h3><p>{note}</p>" + shown.to_html(classes="metrics", border=0, escape=True)


def _distinct(values: np.ndarray, least: int = 3, most: int = 8) -> list[str]:
    """Values with as many significant digits (from ``least``) as it takes to tell the distinct ones apart."""
    finite = values[np.isfinite(values)]
    for digits in range(least, most + 1):
        if len({f"{v:.{digits}g}" for v in finite}) == len(set(finite.tolist())):
            break
    return [f"{v:.{digits}g}" if np.isfinite(v) else "–" for v in values]


def _profile(store: _Store, folder: Path, index: int) -> str:
    import matplotlib.pyplot as plt

    parts = [f"<h3>{_e(store.name)}</h3>"]
    layers = [layer for layer in profiled_layers(store.ds) if f"{layer}_top" in store.ds]
    for number, layer in enumerate(layers):
        name = f"profile{index}-layer{number}.png"
        fig = plot_naps(store.ds, layer, top=4)
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        parts.append(
            f"<figure><img src='img/{name}' alt='NAPs of {_e(layer)}' loading='lazy'>"
            f"<figcaption>{_e(layer)}: each group's average input, and the layer's most distinctive feature "
            "maps (red: the group activates the map more than the average group, blue: less)</figcaption></figure>"
        )
    if "dead_share" in store.ds:
        name = f"profile{index}-dead.png"
        fig = plot_dead_feature_maps(store.ds)
        fig.savefig(folder / name, dpi=80)
        plt.close(fig)
        parts.append(f"<figure><img src='img/{name}' alt='dead feature maps' loading='lazy'>"
                     "<figcaption>share of dead feature maps per layer</figcaption></figure>")  # fmt: skip
    return "\n".join(parts)


def _sample(sample: Any, position: int, page: int, maps: list[_Store], folder: Path, percentile: float,
            alpha: float, truth: Mapping[Any, Sequence[Any]] | None) -> str:  # fmt: skip
    import matplotlib.pyplot as plt

    parts = [f"<section class='sample' data-page='{page}' id='s{position}'><h3>{_e(sample)}</h3>"]
    for k, store in enumerate(maps):
        if sample not in store.ds.indexes["sample"]:
            parts.append(f"<p class='missing'>{_e(store.name)}: not in this store</p>")
            continue
        ds = store.ds.sel(sample=[sample]).load()  # one read of the sample's chunks, not one per map
        image = display_image(ds, sample)
        rows = []
        for t, target in enumerate(targets_of(ds, sample)):
            cells = []
            if image is not None:
                name = f"{k}-{position}-input.png"
                if t == 0:
                    plt.imsave(folder / name, _rgb(image))
                cells.append(_cell(name, "input", ""))
            for m, method in enumerate(method_ids(ds)):
                name = f"{k}-{position}-{t}-{m}.png"
                layer = map_layer(ds, method)
                try:
                    values = select_map(ds, method, sample=sample, target=target).values
                except KeyError:
                    cells.append(f"<div class='cell empty'>{_e(method)}: no map</div>")
                    continue
                if layer is not None and values.ndim != 3:  # a layer's output that is no image
                    shape = " x ".join(map(str, values.shape))
                    cells.append(f"<div class='cell empty'>{_e(method)} @ {_e(layer)}: {shape}, not drawn</div>")
                    continue
                limit = colour_limit([values.sum(0)], percentile)
                # A layer's map at its own resolution, alone: the input has another size.
                plt.imsave(folder / name, _picture(image if layer is None else None, values, alpha, limit))
                caption = method if layer is None else f"{method} @ {layer}"
                cells.append(_cell(name, caption, f"|map| limit {limit:.3g}"))
            score = _score(ds, sample, target)
            output = stored_output(ds.attrs)
            shown = f"{output} {score:.3g}" if np.isfinite(score) else "no score"
            marks = ["true"] if truth is not None and target in list(truth.get(sample, ())) else []
            if ds.attrs.get("task") == "multilabel" and np.isfinite(score):
                # the sigmoid, without exp overflowing, unless the score is the sigmoid already
                p = score if output == "sigmoid" else 0.5 * (1.0 + math.tanh(score / 2))
                shown += f", p {p:.3f}" if output != "sigmoid" else ""
                marks += ["predicted"] if p > float(ds.attrs.get("threshold", 0.5)) else []
            mark = f"<br><b class='mark'>{' and '.join(marks)}</b>" if marks else ""
            rows.append(f"<div class='target'><div class='label'>{_e(target)}{mark}<br><small>{shown}</small></div>"
                        f"{''.join(cells)}</div>")  # fmt: skip
        parts.append(f"<div class='store'><h4>{_e(store.name)}</h4>{''.join(rows) or '<p>no maps</p>'}</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _cell(name: str, caption: str, note: str) -> str:
    return (
        f"<figure class='cell'><img src='img/{name}' alt='{_e(caption)}' loading='lazy'>"
        f"<figcaption>{_e(caption)}{'<br><small>' + _e(note) + '</small>' if note else ''}</figcaption></figure>"
    )


def _rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array


def _pager(pages: int) -> str:
    if pages == 1:
        return ""
    links = "".join(f"<a href='#page={p + 1}' data-goto='{p}'>{p + 1}</a>" for p in range(pages))
    return (
        "<nav class='pager'><a href='#' data-step='-1' class='prev'>&larr; previous</a>"
        f"{links}<a href='#' data-step='1' class='next'>next &rarr;</a>"
        f"<span class='where'>page <b class='current'>1</b> of {pages}</span></nav>"
    )


def _picture(image: np.ndarray | None, values: np.ndarray, alpha: float, limit: float) -> np.ndarray:
    """The map over its input, or on grey where there is no input or one that is not grey or RGB."""
    if image is not None and image.shape[0] in (1, 3):
        return overlay(image, values, alpha=alpha, limit=limit)
    return overlay(np.full(values.shape[-2:], 0.5), values, alpha=1.0, limit=limit)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222;background:#fff}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;font-size:.9em;
text-align:left;vertical-align:top}pre{font-size:.75em;white-space:pre-wrap;max-width:60em}
.scale{background:#f4f4f4;padding:.5em;border-left:3px solid #888;max-width:60em}
.sample{border-top:2px solid #ddd;margin-top:1em}.store h4{margin:.4em 0}
.target{display:flex;flex-wrap:wrap;align-items:flex-start;gap:4px;margin-bottom:4px}
.label{width:9em;font-size:.85em}.mark{color:#124;font-size:.85em}.cell{margin:0;text-align:center;font-size:.75em;width:132px}
.cell img{width:128px;height:128px;image-rendering:pixelated;border:1px solid #ddd}
.empty{width:128px;height:128px;display:flex;align-items:center;justify-content:center;background:#f4f4f4}
.pager{margin:1em 0;display:flex;flex-wrap:wrap;gap:.4em;align-items:center}
.pager a{padding:.1em .5em;border:1px solid #bbb;text-decoration:none;color:#124}
.pager a.on{background:#124;color:#fff}figure img{max-width:100%}.where{margin-left:1em}
"""

_SCRIPT = """
(function(){
  var sections=document.querySelectorAll('section.sample');
  var pages=0;sections.forEach(function(s){pages=Math.max(pages,+s.dataset.page+1);});
  var current=0;
  function show(p){
    current=Math.max(0,Math.min(pages-1,p));
    sections.forEach(function(s){s.hidden=(+s.dataset.page!==current);});
    document.querySelectorAll('.pager a[data-goto]').forEach(function(a){
      a.classList.toggle('on',+a.dataset.goto===current);});
    document.querySelectorAll('.pager .current').forEach(function(b){b.textContent=current+1;});
    if(location.hash!=='#page='+(current+1)){history.replaceState(null,'','#page='+(current+1));}
  }
  document.addEventListener('click',function(e){
    var a=e.target.closest('.pager a');if(!a){return;}
    e.preventDefault();
    show(a.dataset.goto!==undefined?+a.dataset.goto:current+(+a.dataset.step));
    window.scrollTo(0,document.querySelector('.pager').offsetTop);
  });
  var m=/page=(\\d+)/.exec(location.hash);
  if(pages){show(m?+m[1]-1:0);}
})();
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}"
        f"<script>{_SCRIPT}</script></body></html>"
    )
