"""Constitution validation: every error names the file, the field and what to write."""

import pytest

from tether.errors import TetherError
from tether.judge.constitution import derive_negation, load_constitution


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_examples_load(examples_dir):
    constitutions = [p for p in sorted(examples_dir.glob("*.yaml")) if not p.name.startswith(("tune_", "sample_", "labels_", "experiment_", "verl_", "deploy"))]
    assert len(constitutions) >= 3
    for path in constitutions:
        c = load_constitution(path)
        assert c.principles and c.name == path.stem


def test_bare_yes_no_in_yaml_are_answers(tmp_path):
    # YAML 1.1 reads `yes` as True; the constitution must still mean "yes".
    c = load_constitution(write(tmp_path, """
principles:
  - name: rude
    question: Is the reply rude?
    expect: no
    examples: [{text: "Get lost.", answer: yes}]
"""))
    assert c.principles[0].expect == "no" and c.principles[0].examples[0].answer == "yes"
    assert c.principles[0].sign == -1.0 and c.name == "c"  # name defaults to the file's stem


@pytest.mark.parametrize("body, expected", [
    ("principles: []", r"c.yaml: line 1, column 13: principles: List should have at least 1 item"),
    ("principles:\n  - name: a\n    question: Is it good?\n    weight: -1",
     r"principles\[0\] \(a\)\.weight: .*greater than 0 \(got -1\); expected the principle's weight"),
    ("principles:\n  - name: a\n    question: Is it good?\n    wieght: 2",
     r"principles\[0\] \(a\)\.wieght: unknown field; remove it or fix its spelling \(valid fields: name, question"),
    ("principles:\n  - name: a", r"principles\[0\] \(a\)\.question: missing; add `question:`"),
    ("principles:\n  - name: a\n    question: Q?\n    expect: maybe", r"expect: .*'yes' or 'no'.*\(got 'maybe'\)"),
    ("template: 'Text: {text}'\nprinciples:\n  - {name: a, question: 'Q?'}", r"template: must contain \{question\} exactly once"),
    ("principles:\n  - {name: a, question: 'Q?'}\n  - {name: a, question: 'R?'}", r"principle names must be unique; rename a"),
    ("principles:\n  - {name: 'has space', question: 'Q?'}", r"principles\[0\] \(has space\)\.name: String should match pattern"),
    ("combine: median\nprinciples:\n  - {name: a, question: 'Q?'}", r"combine: .*'mean' or 'softmin'.*expected how principles"),
    ("- just a list", r"expected a mapping with a `principles:` list"),
    ("principles: [\n  - name: a", r"c.yaml: line \d+, column \d+: malformed YAML"),
])
def test_errors_name_file_field_and_fix(tmp_path, body, expected):
    with pytest.raises(TetherError, match=expected):
        load_constitution(write(tmp_path, body))


def test_file_problems(tmp_path):
    with pytest.raises(TetherError, match=r"missing.yaml: no such file"):
        load_constitution(tmp_path / "missing.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(TetherError, match=r"latin1.yaml: line 1: not UTF-8 text \(byte offset 9\)"):
        load_constitution(bad)


@pytest.mark.parametrize("question, negation", [
    ("Is the text cheerful?", "Is the text not cheerful?"),
    ("Does the story stay on its topic?", "Does the story not stay on its topic?"),
    ("Is it polite?", "Is it not polite?"),
    ("Would a child enjoy this?", "Would a child not enjoy this?"),
    ("Is the text not rude?", None),  # already negated: no double negation
    ("Cheerful?", None),  # unknown form: the user must write `negation:`
])
def test_derived_negation(question, negation):
    assert derive_negation(question) == negation


def test_underivable_negation_is_a_clear_error(tmp_path):
    c = load_constitution(write(tmp_path, "principles:\n  - {name: a, question: 'Cheerful?'}"))
    with pytest.raises(TetherError, match="principle 'a': cannot derive a negation .* write `negation:`"):
        c.principles[0].negated_question()


def test_fingerprint_changes_with_content(examples_dir):
    a = load_constitution(examples_dir / "cheerful.yaml")
    b = a.model_copy(deep=True)
    assert a.fingerprint() == b.fingerprint()
    b.principles[0].weight = 2.0
    assert a.fingerprint() != b.fingerprint()


def test_example_tune_and_experiment_configs_load(examples_dir, monkeypatch):
    """Every shipped tune and experiment config validates as the README runs it (from the repository root)."""
    from tether.experiment.config import load_experiment
    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig

    monkeypatch.chdir(examples_dir.parent)
    tunes, experiments = sorted(examples_dir.glob("tune_*.yaml")), sorted(examples_dir.glob("experiment_*.yaml"))
    assert len(tunes) >= 3 and len(experiments) >= 3
    for path in tunes:
        assert load_config(TuneConfig, path).steps > 0
    for path in experiments:
        config = load_experiment(path)
        assert config.tune.is_file() and config.runs()
