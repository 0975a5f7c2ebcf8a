"""The project's own guard: the package writes its core math by hand.

minipt teaches softmax, cross-entropy, attention, layer norm, GELU, the GRU and AdamW by writing them out.
PyTorch's versions are welcome in tests/ and benchmarks/ as reference oracles, never in ``minipt/``.
The checker below reads every ``minipt/**/*.py`` with :mod:`ast`, resolves import aliases
(``import torch.nn.functional as F``, ``from torch import nn``, ``from torch.nn.functional import gelu``) to
full dotted names, and lists ``file:line name`` for every use of a forbidden built-in: a call, a reference
(``activation = nn.GELU``), a base class or an import. Tensor methods ``x.softmax(...)``,
``x.log_softmax(...)`` and ``x.logsumexp(...)`` count too. A line ending with
``# handwritten: ok (reason)`` opts out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minipt"

FORBIDDEN = {
    # softmax family
    "torch.softmax", "torch.log_softmax", "torch.logsumexp",
    "torch.special.softmax", "torch.special.log_softmax", "torch.special.logsumexp",
    "torch.nn.functional.softmax", "torch.nn.functional.log_softmax", "torch.nn.functional.softmin",
    "torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin",
    # losses
    "torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss",
    "torch.nn.functional.binary_cross_entropy", "torch.nn.functional.binary_cross_entropy_with_logits",
    "torch.nn.CrossEntropyLoss", "torch.nn.NLLLoss", "torch.nn.BCELoss", "torch.nn.BCEWithLogitsLoss",
    # attention
    "torch.nn.functional.scaled_dot_product_attention", "torch.nn.functional.multi_head_attention_forward",
    "torch.nn.MultiheadAttention",
    # normalisation and activation
    "torch.nn.functional.layer_norm", "torch.layer_norm", "torch.native_layer_norm", "torch.nn.LayerNorm",
    "torch.nn.functional.gelu", "torch.nn.GELU",
    # recurrent layers
    "torch.nn.GRU", "torch.nn.GRUCell", "torch.nn.LSTM", "torch.nn.LSTMCell", "torch.nn.RNN", "torch.nn.RNNCell",
    # optimisers
    "torch.optim.Adam", "torch.optim.AdamW", "torch.optim.adam.Adam", "torch.optim.adamw.AdamW",
    "torch.optim.adam.adam", "torch.optim.adamw.adamw",
}  # fmt: skip
FORBIDDEN_PREFIXES = ("torch.nn.Transformer", "torch.gru", "torch.lstm", "torch._fused_adam")
FORBIDDEN_METHODS = {"softmax", "log_softmax", "logsumexp"}
OPT_OUT = re.compile(r"#\s*handwritten: ok \(.+\)\s*$")


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> full dotted name, for every import in the module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:  # import torch.nn.functional as F -> F = torch.nn.functional
                    aliases[alias.asname] = alias.name
                else:  # import torch.nn -> binds "torch"
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from . import functional / from .nn import X: the package itself
                module = f"minipt.{module}" if module else "minipt"
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
    return aliases


def dotted_parts(node: ast.AST) -> list[str] | None:
    """``a.b.c`` -> ["a", "b", "c"]; None when the chain does not start at a plain name (``f().x``)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def is_forbidden(full_name: str) -> bool:
    return full_name in FORBIDDEN or full_name.startswith(FORBIDDEN_PREFIXES)


def violations(source: str, filename: str = "<string>") -> list[str]:
    """``"file:line name"`` for each forbidden use in ``source`` (sorted, one per line and name)."""
    tree = ast.parse(source, filename=filename)
    aliases = import_aliases(tree)
    lines = source.splitlines()
    found: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Attribute | ast.Name):
            parts = dotted_parts(node)
            if parts is not None:
                head = aliases.get(parts[0], parts[0])
                full_name = ".".join([head, *parts[1:]])
                names = [full_name]
                # a tensor method (x.softmax(-1)); minipt's own functions (MF.softmax) are what we want
                is_method = len(parts) > 1 and parts[-1] in FORBIDDEN_METHODS
                if is_method and not is_forbidden(full_name) and not full_name.startswith("minipt."):
                    names = [f"<tensor>.{parts[-1]}"]
            elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_METHODS:  # f(x).softmax(-1)
                names = [f"<tensor>.{node.attr}"]
        for name in names:
            if (is_forbidden(name) or name.startswith("<tensor>.")) and not OPT_OUT.search(lines[node.lineno - 1]):
                found.add((node.lineno, name))
    return [f"{filename}:{line} {name}" for line, name in sorted(found)]


def test_the_package_writes_its_core_math_by_hand():
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "functional.py" in files and PACKAGE / "optim.py" in files  # the walk really sees the package
    problems = []
    for path in files:
        problems += violations(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert problems == [], "minipt must write these itself:\n" + "\n".join(problems)


PLANTED = """\
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.nn.functional import cross_entropy as ce
from minipt import functional as MF
from . import functional

def forward(x, target, scores):
    a = F.softmax(x, dim=-1)
    b = x.log_softmax(-1)
    c = torch.logsumexp(x, dim=-1)
    d = ce(x, target)
    e = MF.softmax(x) + functional.log_softmax(x)
    f = (x * 2).softmax(-1)
    g = torch.softmax(x, -1)  # handwritten: ok (reference value for a debug print)
    return nn.Linear(4, 4)(x), torch.optim.Optimizer, optim.lr_scheduler.LambdaLR

class Block(nn.TransformerEncoderLayer):
    activation = nn.GELU
    recurrent = nn.GRU(3, 4)

def make_optimizer(model):
    return optim.AdamW(model.parameters())
"""


def test_the_checker_catches_planted_violations():
    # Every line below is one of the forms the guard must see; lines 5-6, 13, 15 and 16 are allowed uses
    # (minipt's own functions, an opted-out line, nn.Linear, the Optimizer base class, LambdaLR).
    assert violations(PLANTED, "planted.py") == [
        "planted.py:4 torch.nn.functional.cross_entropy",  # the import itself
        "planted.py:9 torch.nn.functional.softmax",  # F alias
        "planted.py:10 <tensor>.log_softmax",  # tensor method
        "planted.py:11 torch.logsumexp",
        "planted.py:12 torch.nn.functional.cross_entropy",  # renamed import, used as a plain name
        "planted.py:14 <tensor>.softmax",  # method of an expression
        "planted.py:18 torch.nn.TransformerEncoderLayer",  # a base class
        "planted.py:19 torch.nn.GELU",  # a reference, not a call
        "planted.py:20 torch.nn.GRU",
        "planted.py:23 torch.optim.AdamW",  # from torch import optim
    ]


def test_the_checker_is_quiet_on_clean_code():
    clean = "import torch\nfrom minipt.functional import softmax\n\ny = softmax(torch.randn(3), dim=0).exp()\n"
    assert violations(clean) == []
