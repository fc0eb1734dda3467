"""The console in a real headless Chromium against a real server and a real explainer sidecar.

The repository is the demo's: mnist_cnn and lenet5, trained briefly on the bundled digits and exported with the
parity check, so that a held-out digit comes back with its true label; beside them a model whose ONNX file is
broken, which the repository index reports with its reason. The tests assert on what a person sees in the page.
The last test stops the sidecar.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from support import DIGITS, ROOT, ExplainerProcess, Http, ServerThread, png_bytes

pytestmark = pytest.mark.slow
DEMO_MODELS = ("mnist_cnn", "lenet5")
METHOD_TITLES = ["Grad-CAM", "Grad-CAM++", "Score-CAM", "Gradient × activation"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The demo's two models, trained on part of the digits for a few epochs (held-out digits never seen)."""
    from cnnserve.export.exporter import export_variant
    from cnnserve.training.train import train_variant

    root = tmp_path_factory.mktemp("console")
    models = root / "models"
    reuse = os.environ.get("CNNSERVE_CONSOLE_MODELS")  # a repository with both, to skip training while iterating
    for name, epochs, limit in (("mnist_cnn", 3, 3000), ("lenet5", 1, 512)):
        if reuse:
            shutil.copytree(f"{reuse}/{name}", models / name)
            continue
        train_variant(name, data_path=DIGITS, epochs=epochs, limit=limit, output_dir=root / "artifacts", verbose=0)
        export_variant(name, artifacts=root / "artifacts", repository=models, data_path=DIGITS)
    broken = models / "broken"
    shutil.copytree(models / "lenet5", broken)
    (broken / "config.pbtxt").write_text((broken / "config.pbtxt").read_text().replace('"lenet5"', '"broken"'))
    (broken / "1" / "model.onnx").write_bytes(b"this is not an ONNX file")
    return models


@pytest.fixture(scope="module")
def sidecar(repo):
    process = ExplainerProcess(repo).start()
    yield process
    if process.proc.poll() is None:
        process.terminate()


@pytest.fixture(scope="module")
def server(repo, sidecar):
    thread = ServerThread(repo, explainer_address=sidecar.address).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def heldout_digit(tmp_path_factory):
    """A held-out digit as a PNG file (what a person would choose in the file dialog) and its true label."""
    from cnnserve.training.data import load_mnist, split_dataset

    data = load_mnist(DIGITS)
    held = split_dataset(data).heldout
    index = int(next(i for i in held[100:] if int(data.y[i]) == 7))
    path = tmp_path_factory.mktemp("upload") / "seven.png"
    path.write_bytes(png_bytes(np.asarray(data.x[index]).reshape(28, 28)))
    return path, "7"


def url(server) -> str:
    return f"http://127.0.0.1:{server.server.http_port}"


def open_console(tab, server):
    page = tab.page
    page.goto(url(server) + "/")  # redirects to /console/
    page.locator("#models-table tbody tr").first.wait_for()
    page.locator("#model-select option[value='mnist_cnn']").wait_for(state="attached")
    return page


def decoded_sizes(page, selector: str) -> list[list[int]]:
    """Natural sizes of the images matching ``selector`` once each has decoded (a broken image raises)."""
    return page.evaluate(
        """async (sel) => Promise.all([...document.querySelectorAll(sel)].map(async (i) => {
            await i.decode(); return [i.naturalWidth, i.naturalHeight]; }))""",
        selector,
    )


def classify(page, path):
    page.select_option("#model-select", "mnist_cnn")
    page.set_input_files("#file-input", str(path))
    page.locator("#predictions li").first.wait_for()
    return page.locator("#predictions .pred .label").all_inner_texts()


def wait_for_heatmaps(page, label: str):
    page.locator("#heatmaps-message", has_text=f"Heatmaps of class “{label}”").wait_for()


def test_the_page_loads_with_no_console_errors_and_lists_the_demo_models(tab, server):
    page = open_console(tab, server)
    assert page.url.endswith("/console/")
    rows = {
        row.locator("th").inner_text(): row.locator("td").all_inner_texts()
        for row in page.locator("#models-table tbody tr").all()
    }
    assert set(DEMO_MODELS) <= set(rows)
    for name in DEMO_MODELS:
        versions, state, shape, classes, explainable = rows[name]
        assert (versions, state.strip(), shape, classes) == ("1", "READY", "[-1, 28, 28, 1]", "10")
        assert explainable.startswith("yes")
    # The broken model is listed, not ready, with the server's reason in words.
    assert "UNAVAILABLE" in rows["broken"][1] and len(rows["broken"][1]) > len("UNAVAILABLE") + 10
    assert "not ready" in page.locator("#models-message").inner_text()
    page.wait_for_timeout(500)  # let the first statistics poll land
    assert tab.console_errors == [] and tab.page_errors == []


def test_a_digit_shows_its_true_label_first_and_four_heatmaps(tab, server, heldout_digit):
    path, label = heldout_digit
    page = open_console(tab, server)
    labels = classify(page, path)
    assert labels[0] == label
    assert len(labels) == 5
    # The image as the model sees it: 28x28, decoded.
    assert decoded_sizes(page, "#model-input") == [[28, 28]]
    assert "ms" in page.locator("#latency").inner_text()
    wait_for_heatmaps(page, label)
    cards = page.locator("#heatmap-grid .card")
    assert [t.split(" (")[0] for t in cards.locator("h3").all_inner_texts()] == METHOD_TITLES
    sizes = decoded_sizes(page, "#heatmap-grid img.overlay")
    assert len(sizes) == 4 and all(w > 0 and h > 0 for w, h in sizes)
    assert all(alt for alt in page.locator("#heatmap-grid img.overlay").evaluate_all("(n) => n.map((i) => i.alt)"))
    # Faithfulness scores beside each map, when the model was scored at export (issue 18's ListLayers field).
    with Http(server.server.http_port) as http:
        status, layers = http.json("GET", "/v1/models/mnist_cnn/explain/layers")
    assert status == 200
    if layers.get("faithfulness"):
        assert all("faithfulness score" in t for t in page.locator("#heatmap-grid .scores").all_inner_texts())
    # The opacity slider changes how strongly the maps cover the image.
    page.fill("#opacity", "0.8")
    assert page.locator("#heatmap-grid img.overlay").evaluate_all("(n) => n.map((i) => i.style.opacity)") == ["0.8"] * 4
    if os.environ.get("CNNSERVE_UPDATE_SCREENSHOT"):  # the README's picture: CNNSERVE_UPDATE_SCREENSHOT=1
        page.locator("#activation-figure").wait_for()
        page.click("#filter-run")
        page.locator("#filters-message", has_text="8 of 8 patterns").wait_for()
        page.wait_for_timeout(2500)  # one more statistics poll
        page.screenshot(path=str(ROOT / "docs" / "console.png"), full_page=True)
    assert tab.console_errors == [] and tab.page_errors == []


def test_choosing_another_class_explains_that_class(tab, server, heldout_digit):
    path, label = heldout_digit
    page = open_console(tab, server)
    labels = classify(page, path)
    wait_for_heatmaps(page, label)
    second = page.locator("#predictions .pred").nth(1)
    second.focus()
    page.keyboard.press("Enter")  # by keyboard, as a button
    wait_for_heatmaps(page, labels[1])
    assert second.get_attribute("aria-pressed") == "true"
    captions = page.locator("#heatmap-grid .card .message").all_inner_texts()
    assert len(captions) == 4 and all(f"“{labels[1]}”" in c for c in captions)


def test_the_layer_selector_defaults_to_the_heatmap_layer_and_switching_changes_the_maps(tab, server, heldout_digit):
    path, label = heldout_digit
    page = open_console(tab, server)
    classify(page, path)
    assert page.locator("#heatmap-layer").input_value() == "conv2"  # mnist_cnn's heatmap layer
    page.locator("#activation-figure").wait_for()
    first = page.locator("#activation-caption").inner_text()
    first_size = decoded_sizes(page, "#activation-grid")[0]
    other = "conv2" if page.locator("#activation-layer").input_value() != "conv2" else "conv1"
    page.select_option("#activation-layer", other)
    page.locator("#activation-caption", has_text=other).wait_for()
    assert page.locator("#activation-caption").inner_text() != first
    assert decoded_sizes(page, "#activation-grid")[0] != first_size
    # Filter patterns of a layer, each shown as it arrives.
    page.select_option("#filter-layer", "conv1")
    page.fill("#filter-count", "4")
    page.click("#filter-run")
    page.locator("#filters-message", has_text="4 of 4 patterns").wait_for()
    sizes = decoded_sizes(page, "#filter-grid img")
    assert len(sizes) == 4 and all(w > 0 for w, _ in sizes)


def test_a_dropped_file_and_a_sample_digit_are_classified_at_a_phones_width(tab, server, heldout_digit):
    path, label = heldout_digit
    page = tab.page
    page.set_viewport_size({"width": 375, "height": 740})
    page = open_console(tab, server)
    page.select_option("#model-select", "mnist_cnn")
    # A file dropped on the drop zone, as a person drags one from their file manager.
    page.evaluate(
        """async ([bytes, name]) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
            document.getElementById("drop-zone").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
        }""",
        [list(path.read_bytes()), path.name],
    )
    page.locator("#classify-message", has_text=f"says “{label}”").wait_for()
    assert page.locator("#predictions .pred .label").first.inner_text() == label
    # One of the sample digits the page ships with: the held-out 6.
    page.click("[data-sample='6']")
    page.locator("#classify-message", has_text="says “6”").wait_for()
    assert page.locator("#original-image").get_attribute("alt").endswith("sample digit 6")
    wait_for_heatmaps(page, "6")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    assert tab.page_errors == []


def test_live_statistics_count_the_calls(tab, server, heldout_digit):
    path, _ = heldout_digit
    page = open_console(tab, server)
    classify(page, path)
    page.select_option("#stats-model", "mnist_cnn")
    rate = page.locator("[data-series='rate'] .now", has_text="req/s")
    rate.wait_for()
    page.locator("[data-series='batch'] .now", has_text="images").wait_for()
    assert page.locator("[data-series='computeMs'] .now").inner_text().startswith("now ")


def test_a_token_is_asked_for_and_kept_for_the_tab_only(browser_context, repo, sidecar):
    secured = ServerThread(repo, explainer_address=sidecar.address, auth_tokens="s3cret").start()
    page = browser_context.new_page()
    try:
        page.goto(f"http://127.0.0.1:{secured.server.http_port}/console/")
        page.locator("#token-form").wait_for()
        assert "needs a bearer token" in page.locator("#token-reason").inner_text()
        page.fill("#token-input", "wrong")
        page.keyboard.press("Enter")
        page.locator("#token-reason", has_text="refused").wait_for()
        page.fill("#token-input", "s3cret")
        page.click("#token-form button[type=submit]")
        page.locator("#models-table tbody tr[data-model='mnist_cnn']").wait_for()
        assert page.locator("#token-form").is_hidden()
        assert page.evaluate("() => sessionStorage.length") == 1 and page.evaluate("() => localStorage.length") == 0
        # Another tab of the same browser does not have it.
        other = browser_context.new_page()
        other.goto(f"http://127.0.0.1:{secured.server.http_port}/console/")
        other.locator("#token-form").wait_for()
        other.close()
    finally:
        page.close()
        secured.stop()


def test_with_the_sidecar_stopped_classify_works_and_heatmaps_say_unavailable(tab, server, sidecar, heldout_digit):
    """Runs last: it stops the module's sidecar."""
    path, label = heldout_digit
    sidecar.terminate()
    page = tab.page
    page.goto(url(server) + "/console/")
    page.locator("#models-table tbody tr[data-model='mnist_cnn']").wait_for()
    assert "explainer unavailable" in page.locator("tr[data-model='mnist_cnn'] td").last.inner_text()
    assert classify(page, path)[0] == label
    page.locator("#heatmap-grid .card").nth(3).wait_for()
    assert "explainer is unavailable" in page.locator("#heatmaps-message").inner_text()
    cards = page.locator("#heatmap-grid .card .message").all_inner_texts()
    assert len(cards) == 4 and all("explainer is unavailable" in c for c in cards)
    page.locator("#activations-message", has_text="explainer is unavailable").wait_for()
    assert page.locator("#predictions li").count() == 5
