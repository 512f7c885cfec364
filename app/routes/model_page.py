"""A model's card as an HTML page (``GET /models/{name}`` with ``Accept: text/html``)."""

from __future__ import annotations

from html import escape
from typing import Any

HTML = "text/html"


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><th scope='row'>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in pairs
    )


def model_page(card: dict[str, Any]) -> str:
    """The card's identity, intended use, limitations, operating points, test metrics and its
    plots (the PNGs the card lists, served by ``/models/{name}/files/{file}``)."""
    name = str(card.get("name", ""))
    training = card.get("training") or {}
    synthetic = (
        "<p class='warning' role='note'><strong>Synthetic data.</strong> This model was trained "
        "and evaluated on synthetic images only: its figures say nothing about real patients."
        "</p>"
        if training.get("synthetic")
        else ""
    )
    points = card.get("operating_points") or {}
    point_rows = "".join(
        f"<tr><th scope='row'>{escape(p)}</th><td>{v['threshold']:.4f}</td>"
        f"<td>{v['sensitivity']:.3f}</td><td>{v['specificity']:.3f}</td></tr>"
        for p, v in sorted(points.items())
    )
    metrics = {k: v for k, v in (card.get("metrics") or {}).items() if isinstance(v, int | float)}
    plots = [f for f in (card.get("files") or {}) if f.endswith(".png")]
    figures = "".join(
        f"<figure><img src='/models/{escape(name)}/files/{escape(f)}' "
        f"alt='{escape(f.removesuffix('.png').replace('_', ' '))} of {escape(name)}'>"
        f"<figcaption>{escape(f.removesuffix('.png').replace('_', ' '))}</figcaption></figure>"
        for f in plots
    )
    limitations = "".join(f"<li>{escape(str(x))}</li>" for x in card.get("limitations") or [])
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(name)} {escape(str(card.get("version")))} — medserve</title>
<link rel="stylesheet" href="/ui/page.css">
</head>
<body>
<header><p><a href="/">medserve</a></p>
<h1>{escape(name)} <span class="version">{escape(str(card.get("version")))}</span></h1></header>
<main>
{synthetic}
<section aria-labelledby="use"><h2 id="use">Intended use</h2>
<p>{escape(str(card.get("intended_use", "")))}</p>
<table>{
        _rows(
            [
                ("task", card.get("task")),
                ("modality", card.get("modality")),
                ("endpoint", card.get("endpoint")),
                ("ready", card.get("ready")),
                ("runtime", card.get("runtime")),
                ("sha256 of model.onnx", (card.get("files") or {}).get("model.onnx")),
            ]
        )
    }</table>
</section>
<section aria-labelledby="limits"><h2 id="limits">Limitations</h2><ul>{limitations}</ul></section>
<section aria-labelledby="points"><h2 id="points">Operating points</h2>
<table><thead><tr><th scope="col">name</th><th scope="col">threshold</th>
<th scope="col">sensitivity</th><th scope="col">specificity</th></tr></thead>
<tbody>{point_rows}</tbody></table>
<p>Default: {
        escape(str(card.get("default_operating_point")))
    } (measured on the validation split)</p>
</section>
<section aria-labelledby="metrics"><h2 id="metrics">Test metrics</h2>
<table>{_rows(sorted(metrics.items()))}</table></section>
<section aria-labelledby="plots"><h2 id="plots">Plots</h2><div class="plots">{
        figures
    }</div></section>
</main>
</body>
</html>
"""
