"""``mistral-np generate`` and ``mistral-np chat`` (cli_generate.py), through cli.main and one real process."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mistral_common
import pytest

from tools.builders import tiny_folder_with_v1_tokenizer
import mistral_np
from mistral_np.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny model folder (hidden 32, 2 layers, window 4) with Mistral v0.1's tokenizer.model."""
    return tiny_folder_with_v1_tokenizer(tmp_path_factory.mktemp("cli-tiny"), seed=9)


def test_generate_streams_text_and_timing(folder, capsys):
    assert main(["generate", folder, "Hello", "--max-new-tokens", "12", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    model = mistral_np.load_model(folder)
    expected = "".join(model.generate("Hello", max_new_tokens=12))
    assert out == expected + ("" if expected.endswith("\n") else "\n")
    assert len(err.strip().splitlines()) == 1
    assert "prompt: 2 tokens" in err and "tok/s" in err and "generated:" in err


def test_generate_options_seed_and_stop(folder, capsys):
    args = ["generate", folder, "Hello", "--max-new-tokens", "20", "--temperature", "1", "--top-k", "50",
            "--top-p", "0.9", "--repetition-penalty", "1.2", "--seed", "4"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first                      # same seed, same text
    stop = first.strip()[3:6]
    main(args + ["--stop", stop])
    out, err = capsys.readouterr()
    assert out == first[:first.find(stop)] + "\n" and "stop: stop_string" in err


def test_chat_with_piped_stdin(folder, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\nHow are you?\n/reset\n\nHi\n"))   # then EOF
    assert main(["chat", folder, "--max-new-tokens", "6", "--temperature", "0", "--system", "Be brief."]) == 0
    out, err = capsys.readouterr()
    answers = out.splitlines()
    model = mistral_np.load_model(folder)
    first = "".join(model.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                               max_new_tokens=6))
    assert answers[0] == first and answers[2] == first           # after /reset the history is gone
    assert answers[1] != first or "(empty answer" in err
    assert err.count("\nprompt: ") + err.startswith("prompt: ") == 3 and "(history cleared)" in err


def test_chat_one_shot_message(folder, capsys):
    assert main(["chat", folder, "-m", "Hi", "--max-new-tokens", "6", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    model = mistral_np.load_model(folder)
    assert out == "".join(model.chat([{"role": "user", "content": "Hi"}], max_new_tokens=6)) + "\n"
    assert len(err.strip().splitlines()) == 1 and "generated:" in err
    assert main(["chat", folder, "--message", "  "]) == 2
    assert "--message is empty" in capsys.readouterr().err


def test_chat_exit_command(folder, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("/exit\nHi\n"))
    assert main(["chat", folder]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv, message", [
    (["generate", "/no/such/model", "Hi"], "/no/such/model: no such file or folder"),
    (["generate", "{folder}", "Hi", "--top-p", "2"], "top_p must be in (0, 1]"),
    (["generate", "{folder}", ""], "empty prompt"),
    (["chat", "{folder}", "--format", "mistral-v3"], "'mistral-v3' does not match this tokenizer"),
    (["chat", "{folder}", "--temperature", "-1"], "temperature must be >= 0"),
])
def test_user_errors_are_one_line(folder, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\n"))
    assert main([a.format(folder=folder) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("mistral-np: error: ") and "Traceback" not in err
    assert message is None or message in err


def test_model_without_tokenizer(folder, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("tokenizer.model"))
    assert main(["generate", str(bare), "Hi"]) == 2
    assert "has no tokenizer" in capsys.readouterr().err


def test_real_process(folder):
    """The installed entry point's module, as a user runs it: stdout only text, stderr only the summary."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "mistral_np.cli", "generate", folder, "-", "--max-new-tokens", "5"],
                       input="Hello", capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "generated: 5 tokens" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mistral_np.cli", "chat", "/no/such/model"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "mistral-np: error:" in r.stderr


def test_chat_survives_a_turn_longer_than_the_context(folder, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("word " * 300 + "\nHi\n"))
    assert main(["chat", folder, "--max-new-tokens", "3", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert "does not fit the model's context of 256 tokens" in err and "/reset starts over" in err
    assert len(out.splitlines()) == 1 and err.count("generated: 3 tokens") == 1
