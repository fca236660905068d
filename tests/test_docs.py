"""The README and docs/ against the code: commands, links, cited tests, the module list.

Every `python main.py ...` line in a code block of README.md or docs/*.md must use an existing config
file whose `get_config()` loads, `--config.<key>=<value>` overrides that name existing keys and parse
(ml_collections' own flag parser, on a fresh `FlagValues` per command), and flags and modes that
main.py defines. A command that contains a placeholder (`<...>` or `...`) is skipped. Nothing is run.
"""

import pathlib
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

import main

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDERS = ("<", ">", "...")


def code_lines(text):
  """`(line number, line)` of the code in markdown `text`: fenced blocks and 4-space indented lines."""
  fence = None
  for number, line in enumerate(text.splitlines(), 1):
    stripped = line.strip()
    if fence is None and stripped[:3] in ("```", "~~~"):
      fence = stripped[:3]
    elif fence is not None and stripped.startswith(fence):
      fence = None
    elif fence is not None or line.startswith("    "):
      yield number, line


def logical_lines(text):
  """`code_lines` with backslash continuations joined, numbered by their first line."""
  pending, start = "", None
  for number, line in code_lines(text):
    start = number if start is None else start
    if line.rstrip().endswith("\\"):
      pending += line.rstrip()[:-1] + " "
      continue
    yield start, pending + line
    pending, start = "", None


def main_commands():
  """`(where, text, args)` of every `python main.py` command of the docs; `args` follow `main.py`."""
  found = []
  for path in DOCS:
    for number, line in logical_lines(path.read_text()):
      for match in re.finditer(r"\bpython3? main\.py\b", line):
        text = re.split(r"&&|\|\||;|\|| #", line[match.start():])[0].strip()
        where = f"{path.relative_to(REPO)}:{number}"
        found.append((where, text, None if any(p in text for p in PLACEHOLDERS) else shlex.split(text)[2:]))
  return found


COMMANDS = main_commands()
CHECKED = [(where, text, args) for where, text, args in COMMANDS if args is not None]


def test_the_docs_have_commands_to_check():
  assert len(CHECKED) >= 20, [text for _, text, _ in COMMANDS]
  assert all(args for _, _, args in CHECKED)


def parse_config_flags(config_args):
  """ml_collections' parse of `--config=...` and its overrides, isolated from main.py's FLAGS."""
  argv = ["main.py", *config_args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True, sys_argv=argv)
  flag_values(argv)
  return flag_values.config  # loads the file


@pytest.mark.parametrize("where, text, args", CHECKED, ids=[where for where, _, _ in CHECKED])
def test_main_command_uses_existing_config_keys_and_flags(where, text, args):
  assert all(arg.startswith("--") for arg in args), f"{where}: an argument that is not a flag: {text}"
  names = [arg[2:].split("=", 1)[0] for arg in args]
  configs = [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
  images_only = "--mode=fid" in args or ("--mode=fid_stats" in args and "samples" in names)  # no config needed
  assert len(configs) == 1 or (images_only and not configs), f"{where}: main.py needs exactly one --config=PATH: {text}"
  if configs:
    assert (REPO / configs[0]).is_file(), f"{where}: no config file {configs[0]}"
    assert "workdir" in names, f"{where}: main.py needs --workdir: {text}"
    config_args = [arg for arg in args if arg.split("=", 1)[0] == "--config" or arg.startswith("--config.")]
    try:
      config = parse_config_flags(config_args)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as error:
      pytest.fail(f"{where}: {' '.join(config_args)}: {error}")
    assert callable(getattr(config, "to_dict", None)), f"{where}: {configs[0]} gives no ConfigDict"
  for arg in args:
    name, _, value = arg[2:].partition("=")
    if name == "config" or name.startswith("config."):
      continue
    if name not in main.FLAGS and name.startswith("no") and name[2:] in main.FLAGS:
      assert main.FLAGS[name[2:]].boolean and not value, f"{where}: --{name}"
      continue
    assert name in main.FLAGS, f"{where}: main.py has no flag --{name}"
    flag = main.FLAGS[name]
    if flag.boolean and "=" not in arg:
      continue
    try:
      flag.parser.parse(value)
    except (flags.Error, ValueError) as error:
      pytest.fail(f"{where}: --{name}={value}: {error}")
  modes = [arg.split("=", 1)[1] for arg in args if arg.startswith("--mode=")]
  assert all(mode in main.FLAGS["mode"].parser.enum_values for mode in modes), f"{where}: {modes}"


# --------------------------------------------------------------------------- links, tests, modules


def slug(heading):
  """GitHub's anchor of a markdown heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
  seen, result = {}, set()
  for _, line in [(0, line) for line in prose(path.read_text()).splitlines()]:
    match = re.match(r"#{1,6} (.*)", line)
    if match:
      base = slug(match.group(1))
      result.add(f"{base}-{seen[base]}" if base in seen else base)
      seen[base] = seen.get(base, 0) + 1
  return result


def prose(text):
  """`text` without its fenced code blocks."""
  return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)


def test_relative_links_and_anchors_exist():
  broken = []
  for path in DOCS:
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(path.read_text())):
      if re.match(r"[a-z]+:", target):
        continue
      file, _, anchor = target.partition("#")
      resolved = (path.parent / file).resolve() if file else path
      if not resolved.exists():
        broken.append(f"{path.relative_to(REPO)}: {target} (no such file)")
      elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
  assert not broken, "\n".join(broken)


def test_cited_differences_exist():
  """`docs/differences.md#<anchor>` cited anywhere in the code or the docs names an entry of that page."""
  entries = anchors(REPO / "docs" / "differences.md")
  sources = [*DOCS, REPO / "main.py", *(p for folder in ("score_jax", "configs", "tests", "benchmarks")
                                       for pattern in ("*.py", "*.md") for p in (REPO / folder).rglob(pattern))]
  missing = sorted({f"{path.relative_to(REPO)}: #{anchor}" for path in sources
                    for anchor in re.findall(r"differences\.md#([\w-]+)", path.read_text())
                    if anchor not in entries})
  assert not missing, missing


def test_cited_tests_exist():
  """Every `tests/<file>.py::<test>` that the docs cite is defined there."""
  missing = []
  for path in DOCS:
    for file, name in re.findall(r"(tests/\w+\.py)::(\w+)", path.read_text()):
      test_file = REPO / file
      if not test_file.is_file() or not re.search(rf"^def {name}\(", test_file.read_text(), re.M):
        missing.append(f"{path.relative_to(REPO)}: {file}::{name}")
  assert not missing, missing


def test_layout_lists_every_module():
  listed = set(re.findall(r"`(score_jax/[\w/]+\.py)`", (REPO / "docs" / "layout.md").read_text()))
  modules = {str(p.relative_to(REPO)) for p in (REPO / "score_jax").rglob("*.py")} - {"score_jax/__init__.py"}
  assert not modules - listed, f"docs/layout.md lacks {sorted(modules - listed)}"
  assert not listed - modules - {"score_jax/__init__.py"}, f"docs/layout.md lists {sorted(listed - modules)}"
