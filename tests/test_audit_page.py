"""The audit page end to end in headless Chromium (Debian's `chromium`, driven by Playwright).

A scripted corpus (no model needed) holds a sample whose text is HTML; the test rejects one
sample with the keyboard, edits another, reloads, and checks that the decisions persisted,
corpus.jsonl was rebuilt, and the HTML sample was shown as text and never run.
"""

import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from tether.corpus.review import make_server
from tether.corpus.store import CorpusDir
from tether.judge.constitution import load_constitution

INJECTION = '<img src=x onerror="window.injected=1"><script>window.injected=2</script>'


def write_corpus(path, examples_dir):
    corpus = CorpusDir(path)
    constitution_file = examples_dir / "cheerful.yaml"
    corpus.start({"scripted": True}, load_constitution(constitution_file), constitution_file, force=False)
    texts = [" and everyone laughed.", " and the rain never stopped.", INJECTION, " so they sang all night."]
    corpus.append_candidates([
        {"id": f"p0-s{i}", "prompt_index": 0, "sample_index": i, "prompt": "Once upon a time", "completion": text,
         "total": float(i), "scores": {"cheerful": float(i)}, "monitors": {}, "status": "kept" if i != 1 else "rejected",
         "reason": "scripted"} for i, text in enumerate(texts)])
    corpus.rebuild()
    return corpus


@pytest.fixture
def server(tmp_path, examples_dir):
    corpus = write_corpus(tmp_path / "corpus", examples_dir)
    server = make_server(corpus.path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield corpus, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def post(url, body, content_type="application/json", host=None):
    request = urllib.request.Request(url + "api/decision", data=body, method="POST",
                                     headers={"Content-Type": content_type, **({"Host": host} if host else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_api_refuses_bad_requests(server):
    corpus, url = server
    assert post(url, b"{not json")[0] == 400
    assert post(url, json.dumps({"id": "p0-s0", "action": "burn"}).encode())[1]["error"].startswith("decision 'burn'")
    assert post(url, json.dumps({"id": "p9-s9", "action": "accept"}).encode())[0] == 400
    assert post(url, b"id=p0-s0&action=reject", content_type="application/x-www-form-urlencoded")[0] == 415
    assert post(url, json.dumps({"id": "p0-s0", "action": "reject"}).encode(), host="evil.example:80")[0] == 403
    assert not corpus.decisions_path.exists()
    status, reply = post(url, json.dumps({"id": "p0-s0", "action": "reject", "note": "n"}).encode())
    assert status == 200 and reply["in_corpus"] == 2


def test_audit_page_in_headless_chromium(server):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); the browser test needs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    corpus, url = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#rows tr").count() == 4

        # HTML in a sample is text on the page, and never runs.
        assert page.locator("tr[data-id='p0-s2'] td").nth(2).text_content() == INJECTION
        assert page.evaluate("window.injected") is None

        # Reject the first sample with the keyboard (it is selected on load; `r` then moves on).
        page.keyboard.press("r")
        page.wait_for_selector("tr[data-id='p0-s0'][data-decision='reject']")
        assert page.locator("tr.selected").get_attribute("data-id") == "p0-s1"

        # Edit the third: select it, type the new text and a note, save with the button.
        page.click("tr[data-id='p0-s2']")
        page.fill("#edit-text", " and the picnic was lovely.")
        page.fill("#note", "removed the markup")
        page.click("#save-edit")
        page.wait_for_selector("tr[data-id='p0-s2'][data-decision='edit']")

        # Sorting and filtering: highest total first; a minimum score hides the low ones.
        page.click("#head th:nth-child(4)")
        assert page.locator("#rows tr").first.get_attribute("data-id") == "p0-s3"
        page.fill("#min", "2")
        assert page.locator("#rows tr").count() == 2

        # Reload: the decisions come back from decisions.jsonl.
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("tr[data-id='p0-s0']").get_attribute("data-decision") == "reject"
        assert page.locator("tr[data-id='p0-s2'] td").nth(2).text_content() == " and the picnic was lovely."
        assert "removed the markup" in page.locator("tr[data-id='p0-s2'] td.decision").text_content()
        browser.close()

    decisions = lines(corpus.decisions_path)
    assert [(d["id"], d["action"]) for d in decisions] == [("p0-s0", "reject"), ("p0-s2", "edit")]
    rows = {r["id"]: r for r in lines(corpus.corpus_path)}
    assert set(rows) == {"p0-s2", "p0-s3"}  # p0-s0 rejected by the person, p0-s1 by the sampler
    assert rows["p0-s2"]["completion"] == " and the picnic was lovely." and rows["p0-s2"]["note"] == "removed the markup"
