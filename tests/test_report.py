"""The HTML report: every figure and table, self-contained, and rendered by a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from snncka import analyses as A
from snncka.cli import main
from snncka.paper.findings.verdicts import judge
from snncka.report import build_report

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)


@pytest.fixture(scope="module")
def run_dir(tiny_runs, tmp_path_factory) -> tuple[Path, list[A.Result]]:
    """A run folder with the two training runs and one saved result of every analysis."""
    root = tmp_path_factory.mktemp("report_run")
    for kind in ("ann", "snn"):
        (root / kind).mkdir()
        for f in ("config.json", "metrics.jsonl"):
            shutil.copy(tiny_runs["root"] / kind / f, root / kind / f)
    ann, snn = A.Subject.load(tiny_runs["ann"], device="cpu"), A.Subject.load(tiny_runs["snn"], device="cpu")
    kw = dict(n_images=64, batch_size=64, device="cpu", progress=False)
    cmp = A.compare_checkpoints(ann, snn, **kw)
    results = [
        cmp,
        A.temporal_checkpoint(snn, **kw),
        A.blocks(cmp)[0],
        A.robustness([ann, snn], eps=[0.01, 0.5], steps=1, **kw),
        A.probe([ann, snn], n_train=200, n_test=100, device="cpu", progress=False),
        A.seeds([ann, snn], include_self=False, **kw),
        A.rates(snn, n_images=64, device="cpu", progress=False),
    ]
    for r in results:
        r.save(root / "results")
    judge({"paper": root}, "smoke").save(root / "results", "findings")  # the paper's claims judged on them
    return root, results


def test_report_contains_every_figure_and_table(run_dir, tmp_path):
    root, results = run_dir
    path = build_report(root)
    assert path == root / "report.html"
    doc = path.read_text()
    expected = []
    for k, r in enumerate(results):
        expected += [p.stem for p in r.plot(tmp_path / str(k)) if p.suffix == ".png"]
    imgs = re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)' alt='([^']*)'>", doc)
    # + the findings' verdict grid and their effects with intervals
    assert len(imgs) == len(expected) + 2 == len(re.findall("<img", doc)) >= 13
    alts = [alt for _, alt in imgs]
    for stem in expected:
        assert any(alt == stem or alt.endswith(": " + stem) for alt in alts), stem
    assert all(len(b64) > 2000 for b64, _ in imgs)
    # tables: training accuracies, analysis summaries, config, environment, timings
    sections = ("Findings: the paper&#x27;s claims judged on these results", "Figures", "Accuracy",
                "CKA and analysis summary", "Files", "Resolved configuration", "Environment", "Timings")
    at = [doc.index(f">{section}</h2>") for section in sections]
    assert at == sorted(at)  # the answer first, provenance last
    lines = (root / "ann" / "metrics.jsonl").read_text().splitlines()
    best = max(json.loads(line)["test_acc"] for line in lines)
    assert f"{100 * best:.4g}" in doc
    for kind in ("compare", "temporal", "blocks", "robustness", "probe", "seeds", "rates"):
        assert f"<h3>{kind}</h3>" in doc, kind
    for text in ("mean CKA (diagonal)", "acc eps=0.5", "last block probe",
                 "&quot;model&quot;: &quot;resnet8", "torch", "train ANN resnet8 x0.5 seed0", "ANN resnet8 x0.5 seed0",
                 "SNN resnet8 x0.5 T4 seed0"):
        assert text in doc, text
    # the images a result used, never the recipe's default taken for them
    assert "&quot;images used&quot;: 64" in doc
    assert not re.search(r"cka_images&quot;: 4096[,\n]", doc)
    # models named by label, paths only as one-line file-name cells (full path in the provenance's Files)
    assert doc.count("class='path'") >= 10 and "<td>analyses/" not in doc and "<td>results/" not in doc
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:|#)", doc)
    assert "<script" not in doc and "@import" not in doc and "url(" not in doc


def test_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "missing")
    with pytest.raises(ValueError, match="nothing to report"):
        build_report(tmp_path)
    res = CliRunner().invoke(main, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_report_cli(run_dir, tmp_path):
    root, _ = run_dir
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(root), "--out", str(out), "--title", "My run"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "<title>My run</title>" in out.read_text()


_CHECK = r"""<script>
window.addEventListener('error', e => document.title = 'ERROR ' + e.message);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const d = document.createElement('div'); d.id = 'imgcheck';
  d.textContent = `images ${ok}/${imgs.length}`; document.body.appendChild(d);
  // where each part starts, and the most lines any table cell holding a path (or a file name) is broken over
  const top = id => Math.round(document.getElementById(id).getBoundingClientRect().top + scrollY);
  let lines = 0, n = 0;
  for (const td of document.querySelectorAll('td')) {
    const t = td.textContent.trim();
    if (!td.classList.contains('path') && !(/^\S*[/]\S*$/.test(t) && /[A-Za-z]/.test(t))) continue;
    const r = document.createRange(); r.selectNodeContents(td); n++;
    const broken = new Set([...r.getClientRects()].map(q => Math.round(q.top))).size
      - td.querySelectorAll('br').length;  // lines beyond the cell's own line breaks
    lines = Math.max(lines, broken);
  }
  const m = document.createElement('pre'); m.id = 'layout';
  m.textContent = JSON.stringify({verdicts: top('verdicts'), figures: top('figures'), files: top('files'),
    firstImg: Math.round(document.images[0].getBoundingClientRect().top + scrollY), pathCells: n, lines});
  document.body.appendChild(m);
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    root, _ = run_dir
    doc = build_report(root, tmp_path / "report.html").read_text()
    n = doc.count("<img")
    # the same document plus a checker script (the report itself has no script)
    page = tmp_path / "checked.html"
    page.write_text(doc.replace("</body>", _CHECK + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"<div id=\"imgcheck\">images {n}/{n}</div>" in p.stdout, p.stdout[-500:]
    assert "ERROR " not in p.stdout.split("</title>")[0]
    console = [line for line in p.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    # the answer first (verdicts, then figures), provenance last; no table cell breaks a path over lines
    layout = json.loads(html.unescape(re.search(r'<pre id="layout">(.*?)</pre>', p.stdout).group(1)))
    assert layout["verdicts"] < layout["firstImg"] < layout["figures"] < layout["files"], layout
    assert layout["pathCells"] >= 10 and layout["lines"] == 1, layout
