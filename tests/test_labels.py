"""The labeling page: spec, items, labels file, the HTTP API, and the page end to end in headless Chromium.

No model is needed: labeling only shows text. A run-like folder is written here (samples.jsonl
with steps and scores, base_samples.jsonl), one completion of which is HTML that must be shown
as text and never run.
"""

import http.client
import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from tether.cli import main
from tether.errors import TetherError
from tether.labels.items import compare_pairs, label_order, read_items
from tether.labels.server import Session, make_server
from tether.labels.spec import load_spec
from tether.labels.store import LabelsFile

INJECTION = '<img src=x onerror="window.injected=1"><script>window.injected=2</script>'
PROMPTS = ["Once upon a time, Mia", "The old baker opened his shop"]
ONE_QUESTION = "questions:\n  - name: good\n    question: Is it good?\n"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_run(path):
    """A run folder as tune leaves it: two steps of two completions a prompt, and the base model's samples."""
    path.mkdir()
    (path / "config.yaml").write_text("steps: 2\n")
    (path / "events.jsonl").write_text('{"event": "start"}\n')
    rows = []
    for step in (1, 2):
        for p, prompt in enumerate(PROMPTS):
            for k in range(2):
                text = INJECTION if (step, p, k) == (2, 1, 1) else f" story {step}-{p}.{k} went on happily."
                rows.append({"step": step, "prompt": prompt, "completion": text, "train": 0.1 * step, "gold": 0.5})
    write_jsonl(path / "samples.jsonl", rows)
    write_jsonl(path / "base_samples.jsonl", [{"prompt": p, "completions": [f" ({i}) walked on.", f" ({i}) sat down."]}
                                              for i, p in enumerate(PROMPTS)])
    return path


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path / "run")


@pytest.fixture
def one_question(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_QUESTION)
    return load_spec(spec)


def serving(session):
    server = make_server(session, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@pytest.fixture
def served():
    servers = []

    def start(session):
        server, url = serving(session)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def post(url, body: bytes, content_type="application/json", headers=None):
    """POST raw bytes with any headers (http.client: urllib would fix a bad Content-Length for us)."""
    host, port = url.removeprefix("http://").strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/api/answer", skip_host=True, skip_accept_encoding=True)
    sent = {"Host": f"{host}:{port}", "Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
    for key, value in sent.items():
        conn.putheader(key, value)
    conn.endheaders()
    if sent["Content-Length"].isdigit() and int(sent["Content-Length"]) <= len(body):
        conn.send(body)
    response = conn.getresponse()
    status, reply = response.status, json.loads(response.read())
    conn.close()
    return status, reply


def state(url):
    with urllib.request.urlopen(url + "api/state", timeout=10) as response:
        return json.loads(response.read())


# --- spec -------------------------------------------------------------------------------


def test_the_shipped_spec_loads(examples_dir):
    spec = load_spec(examples_dir / "labels_cheerful.yaml")
    assert spec.names() == ["on_task", "cheerful", "good"]


@pytest.mark.parametrize("text, expected", [
    # a misspelled field: its line, and the fields a question takes
    ("questions:\n  - name: a\n    question: Q?\n    hlep: x\n",
     "line 4, column 11: questions.0.hlep: unknown field; valid fields: name, question, help"),
    # a name that is not an identifier
    ("questions:\n  - name: on task\n    question: Q?\n", "line 2, column 11: questions.0.name: 'on task'"),
    # the same name twice
    ("questions:\n  - name: a\n    question: Q?\n  - name: a\n    question: R?\n",
     "line 2, column 3: questions: "),
    # broken YAML
    ("questions: [\n", "line 2, column 1: malformed YAML"),
    # no questions at all
    ("questions: []\n", "line 1, column 12: questions: []: List should have at least 1 item"),
])
def test_spec_errors_are_one_line_with_file_and_line(tmp_path, text, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(TetherError) as e:
        load_spec(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path))
    assert expected in message


# --- items ------------------------------------------------------------------------------


def test_items_from_a_run_have_stable_ids_and_hidden_sources(run):
    items = read_items(run)
    assert len(items) == 12  # 8 policy samples + 4 base samples
    assert [i.id for i in read_items(str(run))] == [i.id for i in items]  # the same ids on every read
    assert len({i.id for i in items}) == 12
    base = [i for i in items if i.source["arm"] == "base"]
    assert len(base) == 4 and all(i.source["step"] == 0 for i in base)
    late = read_items(f"{run}@step=2")
    assert {i.source["step"] for i in late} == {2} and len(late) == 4
    assert {i.id for i in read_items(f"{run}@arm=base")} == {i.id for i in base}
    assert late[0].source["train"] == pytest.approx(0.2) and "step" not in late[0].shown()
    with pytest.raises(TetherError, match="no samples match step=7"):
        read_items(f"{run}@step=7")


def test_items_from_a_corpus_a_sweep_and_a_plain_jsonl(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_jsonl(corpus / "candidates.jsonl", [{"id": "p0-s0", "prompt": "P", "completion": " a", "total": 0.9,
                                               "status": "kept"}])
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    write_jsonl(sweep / "samples.jsonl", [{"alpha": a, "prompt": "P", "completion": " a", "kl": 0.0} for a in (0, 0.5)])
    plain = tmp_path / "texts.jsonl"
    write_jsonl(plain, [{"prompt": "P", "completion": " a", "note": "x"}])

    (c,), (s0,), (p,) = read_items(corpus), read_items(sweep), read_items(plain)
    assert (c.source["kind"], c.source["arm"], c.source["total"]) == ("corpus", "kept", 0.9)
    assert (s0.source["kind"], s0.source["arm"]) == ("sweep", "alpha=0")  # the same text at alpha 0.5 is one item
    assert (p.source["kind"], p.source["note"]) == ("file", "x")
    # the same prompt and completion from another source is another item (its answers join to that source)
    assert len({c.id, s0.id, p.id}) == 3 and all(len(i.id) == 12 for i in (c, s0, p))
    assert read_items(plain)[0].id == p.id
    write_jsonl(plain, [{"prompt": "P", "text": "no completion"}])
    with pytest.raises(TetherError, match=r"texts.jsonl: record 1: expected text fields prompt and completion"):
        read_items(plain)
    with pytest.raises(TetherError, match="no samples here"):
        read_items(tmp_path)


def test_orders_are_random_per_person_and_stable(run):
    items = read_items(run)
    ana = [i.id for i in label_order(items, "ana")]
    assert ana == [i.id for i in label_order(list(reversed(items)), "ana")]  # stable, whatever the read order
    assert ana != [i.id for i in label_order(items, "bo")] and sorted(ana) == sorted(i.id for i in items)
    some = {i.id for i in label_order(items, "ana", limit=5)}
    assert len(some) == 5 and some == {i.id for i in label_order(items, "bo", limit=5)}  # the same subset for all
    pairs = compare_pairs(read_items(f"{run}@arm=base"), read_items(f"{run}@step=2"), "ana")
    assert len(pairs) == 4 and all(p.left.prompt == p.right.prompt == p.prompt for p in pairs)
    base, late = read_items(f"{run}@arm=base"), read_items(f"{run}@step=2")
    sides = [[p.left.source["arm"] for p in compare_pairs(base, late, "ana", seed)] for seed in range(10)]
    assert sides[3] == [p.left.source["arm"] for p in compare_pairs(base, late, "ana", 3)]  # seeded: stable on reload
    assert {arm for row in sides for arm in row} == {"base", "policy"}  # base is shown left in some pairs, right in others


# --- the labels file --------------------------------------------------------------------


def test_a_torn_last_line_is_ignored_and_cut_by_the_next_answer(run, tmp_path):
    item, other = read_items(run)[:2]
    path = tmp_path / "labels.jsonl"
    labels = LabelsFile(path)
    labels.add_label(item, "good", "yes", "ana")
    with open(path, "a") as f:
        f.write('{"kind": "label", "item": "tor')  # a crash mid-append
    assert len(labels.records()) == 1
    assert labels.unanswered([item, other], ["good"], "ana") == [other]
    labels.add_label(other, "good", "no", "ana")
    rows = lines(path)  # every line parses: the fragment is gone
    assert [(r["item"], r["answer"]) for r in rows] == [(item.id, "yes"), (other.id, "no")]
    assert rows[1]["source"]["completion"] == other.completion and rows[1]["source"]["step"] == other.source["step"]
    labels.add_label(other, "good", "skip", "ana")  # a changed mind: the latest answer counts
    assert labels.answers_of("ana")[other.id] == {"good": "skip"} and labels.answers_of("bo") == {}


# --- the HTTP API -----------------------------------------------------------------------


def test_bad_requests_get_400_and_write_nothing(run, tmp_path, one_question, served):
    out = tmp_path / "labels.jsonl"
    session = Session([run], out, one_question, who="ana")
    url = served(session)
    item = session.items[0].id
    good = json.dumps({"item": item, "question": "good", "answer": "yes"}).encode()
    assert post(url, b"{not json")[0] == 400
    assert post(url, b"[1, 2]")[0] == 400
    assert post(url, json.dumps({"item": "nope", "question": "good", "answer": "yes"}).encode())[0] == 400
    assert post(url, json.dumps({"item": item, "question": "other", "answer": "yes"}).encode())[0] == 400
    status, reply = post(url, json.dumps({"item": item, "question": "good", "answer": "maybe"}).encode())
    assert status == 400 and reply["error"] == "answer 'maybe': write one of yes, no, skip"
    assert post(url, good, headers={"Content-Length": "ten"})[0] == 400
    assert post(url, good, headers={"Content-Length": "-5"})[0] == 400
    assert post(url, good, headers={"Content-Length": "2000000"})[0] == 413
    assert post(url, good, content_type="application/x-www-form-urlencoded")[0] == 415
    assert post(url, good, headers={"Host": "evil.example:80"})[0] == 403
    assert not out.exists()
    status, reply = post(url, good)
    assert status == 200 and (reply["done"], reply["total"]) == (1, 12) and "source" not in reply["saved"]
    page_state = state(url)  # what the page gets: ids and texts, no step, arm or score
    assert set(page_state["items"][0]) == {"id", "prompt", "completion", "answers"}
    assert "train" not in json.dumps(page_state) and "base_samples" not in json.dumps(page_state)


def test_the_api_labels_and_compares_as_the_page_does(run, tmp_path, one_question, served):
    """The same flow as the browser test, through the API: it runs where Chromium is absent."""
    out = tmp_path / "labels.jsonl"
    session = Session([run], out, one_question, who="ana")
    url = served(session)
    for item, answer in zip(session.items[:3], ("yes", "no", "skip")):
        assert post(url, json.dumps({"item": item.id, "question": "good", "answer": answer}).encode())[0] == 200
    again = Session([run], out, one_question, who="ana")  # a restart resumes
    assert [i.id for i in again.labels.unanswered(again.items, ["good"], "ana")] == [i.id for i in again.items[3:]]
    pairs = Session([f"{run}@arm=base", f"{run}@step=2"], out, None, mode="compare", who="ana")
    url = served(pairs)
    for pair, choice in zip(pairs.pairs[:2], ("left", "tie")):
        assert post(url, json.dumps({"pair": pair.id, "choice": choice}).encode())[0] == 200
    assert [p["choice"] for p in state(url)["pairs"]] == ["left", "tie", None, None]
    rows = lines(out)
    assert [r["kind"] for r in rows] == ["label"] * 3 + ["compare"] * 2
    assert rows[3]["winner"] == pairs.pairs[0].left.id and rows[4]["winner"] is None
    assert {rows[3]["sources"]["left"]["arm"], rows[3]["sources"]["right"]["arm"]} == {"base", "policy"}


def test_the_cli_refuses_bad_input_in_one_line(run, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("questions:\n  - name: good\n    wording: Is it good?\n")
    good = tmp_path / "good.yaml"
    good.write_text(ONE_QUESTION)
    texts = tmp_path / "texts.jsonl"
    write_jsonl(texts, [{"prompt": "P", "completion": " c"}])
    for argv, expected in [
        (["label", str(run), "--spec", str(spec), "--out", str(tmp_path / "l.jsonl")],
         "spec.yaml: line 2, column 3: questions.0.question: Field required"),
        (["label", str(run), "--out", str(tmp_path / "l.jsonl")], "give --spec SPEC.yaml"),
        (["label", str(run), "--spec", str(good), "--who", " ana", "--out", str(tmp_path / "l.jsonl")], "--who ' ana': write a name on one line"),
        (["label", str(run), "--mode", "compare", "--out", str(tmp_path / "l.jsonl")], "compare mode needs two sources"),
        (["label", str(run), "--spec", str(spec), "--out", str(run / "samples.jsonl")], "tether's own file"),
        (["label", str(tmp_path / "none"), "--spec", str(good), "--out", str(tmp_path / "l.jsonl")], "none: no such file"),
        (["label", str(texts), "--spec", str(good), "--out", str(texts)], "--out is a SOURCE file"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "l.jsonl").exists() and texts.read_text() == '{"prompt": "P", "completion": " c"}\n'


# --- the page, in headless Chromium ------------------------------------------------------


def test_the_labeling_page_in_headless_chromium(run, tmp_path, one_question, served):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); the browser test needs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    out = tmp_path / "labels.jsonl"
    session = Session([run], out, one_question, who="ana")
    compare = Session([f"{run}@arm=base", f"{run}@step=2"], out, None, mode="compare", who="ana")
    label_url, compare_url = served(session), served(compare)
    order = [i.id for i in session.items]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(label_url)
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#item").get_attribute("data-id") == order[0]
        assert page.locator("#progress").text_content().startswith("0 of 12 samples")

        # Label three samples with the keyboard; each answer moves on to the next sample.
        for key in ("y", "n", "3"):
            page.keyboard.press(key)
        page.wait_for_selector(f"#item[data-id='{order[3]}']")
        assert page.locator("#progress").text_content().startswith("3 of 12 samples")

        # Reload: the labeled samples are not shown again; the page resumes at the fourth.
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#item").get_attribute("data-id") == order[3]

        # HTML in a completion is text on the page, and never runs.
        target = next(n for n, i in enumerate(session.items) if i.completion == INJECTION)
        for _ in range(abs(target - 3)):
            page.keyboard.press("ArrowRight" if target > 3 else "ArrowLeft")
        page.wait_for_selector(f"#item[data-id='{order[target]}']")
        assert page.locator("#completion").text_content() == INJECTION
        assert page.locator("#completion img").count() == 0 and page.evaluate("window.injected") is None

        # Compare mode: pick left with the arrow key, then a tie; reload resumes at the third pair.
        page.goto(compare_url)
        page.wait_for_selector("body[data-ready='1']")
        pair_ids = [q.id for q in compare.pairs]
        assert page.locator("#pair").get_attribute("data-id") == pair_ids[0]
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("t")
        page.wait_for_selector(f"#pair[data-id='{pair_ids[2]}']")
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#pair").get_attribute("data-id") == pair_ids[2]
        assert page.locator("#progress").text_content().startswith("2 of 4 pairs")
        assert "base" not in page.locator("body").inner_text() and "step" not in page.locator("body").inner_text()
        browser.close()

    rows = lines(out)
    assert len(rows) == 5 and all(r["who"] == "ana" and r["time"].endswith("+00:00") for r in rows)
    assert [(r["item"], r["answer"]) for r in rows[:3]] == list(zip(order[:3], ("yes", "no", "skip")))
    assert all(r["source"]["file"].endswith("samples.jsonl") and "arm" in r["source"] for r in rows[:3])
    by_id = {i.id: i for i in session.items}
    assert [r["source"]["completion"] for r in rows[:3]] == [by_id[i].completion for i in order[:3]]
    first, second = compare.pairs[:2]
    assert (rows[3]["left"], rows[3]["right"], rows[3]["choice"], rows[3]["winner"]) == \
        (first.left.id, first.right.id, "left", first.left.id)
    assert (rows[4]["choice"], rows[4]["winner"]) == ("tie", None) and rows[4]["prompt"] == second.prompt
    assert rows[4]["sources"]["left"]["arm"] == second.left.source["arm"]
