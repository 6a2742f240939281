"""A corpus of hostile specs: what a user who tries to break the front end writes.

Each case is a spec (`t.space`, sometimes with extra files; an empty text
stands for `spaces/dlsr.space`), the command-line
arguments, and the expected outcome: `Reject` (exit 2, a `t.space:LINE:COL:`
location where one exists, a message substring) or `Accept` (check, flops and
compile succeed; derive for the first decisions gives a spec that checks).
`test_hostile.py` runs them; the ids name the issue item each case covers.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Reject:
    message: str
    line: int | None = None  # None: a flag error, no location in the spec
    command: str = "check"


@frozen
class Accept:
    warning: str | None = None


@frozen
class Case:
    id: str
    text: str
    expect: Reject | Accept
    args: tuple[str, ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()  # extra files next to t.space


def net(*body: str, out: str = "x", params: str = "C = 8", tail: str = "") -> str:
    """A network around `body` (line 2 on) whose output is `out` upscaled ×2, 3 channels."""
    lines = [f"network n({params}) {{", *(f"    {b}" for b in body),
             f"    return pixel_shuffle(conv({out}, 12, k=3), 2)", "}"]
    return "\n".join(lines) + "\n" + tail


STEM = "x = conv(input, C)"
CASES: list[Case] = []


def reject(id: str, text: str, message: str, line: int | None, *args: str,
           command: str = "check", files=()) -> None:
    CASES.append(Case(id, text, Reject(message, line, command), tuple(args), tuple(files)))


def accept(id: str, text: str, *args: str, warning: str | None = None, files=()) -> None:
    CASES.append(Case(id, text, Accept(warning), tuple(args), tuple(files)))


# ------------------------------------------------------------ recursion depth
reject("depth-relu-400", net("x = " + "relu(" * 400 + "input" + ")" * 400), "levels deep", 2)
reject("depth-plus-chain-1000", net("x = " + " + ".join(["input"] * 1000)), "levels deep", 2)
reject("depth-plus-chain-1000-fmt", net("x = " + " + ".join(["input"] * 1000)),
       "levels deep", 2, command="fmt")
reject("depth-relu-400-flops", net("x = " + "relu(" * 400 + "input" + ")" * 400),
       "levels deep", 2, command="flops")
reject("depth-relu-400-compile", net("x = " + "relu(" * 400 + "input" + ")" * 400),
       "levels deep", 2, command="compile")
reject("depth-times-chain-300", net(STEM, "y = " + " * ".join(["x"] * 300), out="y"),
       "levels deep", 3)
reject("depth-arith-400", net("x = conv(input, " + "1 + " * 400 + "C)"), "levels deep", 2)
reject("depth-op-chain-120",
       "\n".join(["op o0(x: C) {\n    return relu(x)\n}"]
                 + [f"op o{i}(x: C) {{\n    return o{i - 1}(x)\n}}" for i in range(1, 120)])
       + "\n" + net("x = o119(input)").replace("network", "network", 1),
       "levels deep", None)
accept("depth-relu-99-ok", net("x = " + "relu(" * 98 + "conv(input, C)" + ")" * 98))
accept("depth-plus-chain-99-ok", net(STEM, "y = " + " + ".join(["x"] * 99), out="y"))
accept("depth-parentheses-5000-ok", net("x = conv(input, " + "(" * 5000 + "C" + ")" * 5000
                                        + ")"))

# ------------------------------------------------------------ limits
reject("limit-channels-1e30", net("x = conv(input, 1000000000000000000000000000000)"),
       "channels", 2)
reject("limit-channels-set-26-digits", net(STEM), "channels", 2,
       "--set", "C=12345678901234567890123456")
reject("limit-channels-set-26-digits-flops", net(STEM), "channels", 2,
       "--set", "C=12345678901234567890123456", command="flops")
reject("limit-channels-set-26-digits-compile", net(STEM), "channels", 2,
       "--set", "C=12345678901234567890123456", command="compile")
reject("limit-channels-concat", net(STEM, "y = concat(x, x, x, x, x, x, x, x, x)", out="y"),
       "channels", 3, "--max-channels", "64")
reject("limit-channels-flag", net(STEM), "channels", 2, "--max-channels", "4")
reject("limit-kernel-100001", net("x = conv(input, C, k=100001)"), "`k` of `conv`", 2)
reject("limit-kernel-100001-compile", net("x = conv(input, C, k=100001)"), "`k` of `conv`", 2,
       command="compile")
reject("limit-kernel-flag", net(STEM), "`k` of `conv`", 2, "--max-kernel", "1")
reject("limit-kernel-flag-explicit", net("x = conv(input, C, k=5)"), "`k` of `conv`", 2,
       "--max-kernel", "3")
reject("limit-dilation-huge", net("x = conv(input, C, dilation=100000)"), "dilation", 2)
reject("limit-padding-huge", net("x = conv(input, C, padding=10000000)"), "padding", 2)
reject("limit-stride-huge", net("x = maxpool(conv(input, C), 3, stride=1000000)"), "stride", 2)
reject("limit-cells-1e9",
       net("b[1] = conv(input, C)", "for i in 2..cells {", "    b[i] = conv(b[i - 1], C)", "}",
           out="b[2]", params="C = 8, cells = 1000000000"), "loop runs", 3)
reject("limit-cells-set-100000-dlsr", "", "loop runs", 37, "--set", "cells=100000")
reject("limit-loop-flag", net("b[1] = conv(input, C)", "for i in 2..3 {",
                              "    b[i] = conv(b[i - 1], C)", "}", out="b[3]"),
       "loop runs", 3, "--max-loop", "1")
reject("limit-nested-loops-nodes",
       net("b[0] = conv(input, C)", "for i in 1..3000 {", "    for j in 1..3000 {",
           "        b[i * 3001 + j] = relu(b[0])", "    }", "}", out="b[0]"),
       "primitive ops", 5)
reject("limit-nodes-flag", net(STEM, "y = relu(relu(relu(x)))", out="y"), "primitive ops", 3,
       "--max-nodes", "3")
reject("limit-params-flag", net(STEM), "parameters", 1, "--max-params", "100")
reject("limit-macs-flag", net(STEM), "Multi-Adds", 1, "--max-macs", "1000")
reject("limit-params-default", net("x = conv(input, 60000, k=255)", "y = conv(x, 60000, k=255)",
                                   out="y"), "parameters", 1)
reject("limit-bad-flag-value", net(STEM), "positive integer", None, "--max-nodes", "zero")

# ------------------------------------------------------------ argument ranges
for id_, call, message in [
    ("range-conv-padding-negative-5", "conv(input, C, padding=-5)", "padding"),
    ("range-conv-padding-negative-1", "conv(input, C, padding=-1)", "padding"),
    ("range-conv-stride-zero", "conv(input, C, stride=0)", "stride"),
    ("range-conv-stride-negative", "conv(input, C, stride=-2)", "stride"),
    ("range-conv-dilation-zero", "conv(input, C, dilation=0)", "dilation"),
    ("range-conv-dilation-negative", "conv(input, C, dilation=-1)", "dilation"),
    ("range-conv-k-zero", "conv(input, C, k=0)", "`k`"),
    ("range-conv-k-negative", "conv(input, C, k=-3)", "`k`"),
    ("range-conv-out-zero", "conv(input, 0)", "`out`"),
    ("range-conv-out-negative", "conv(input, -8)", "`out`"),
    ("range-conv-groups-zero", "conv(input, C, groups=0)", "groups"),
    ("range-conv-groups-not-dividing", "conv(input, C, groups=2)", "groups"),
    ("range-dwconv-stride-zero", "dwconv(conv(input, C), stride=0)", "stride"),
    ("range-dwconv-padding-negative", "dwconv(conv(input, C), padding=-3)", "padding"),
    ("range-maxpool-stride-negative", "maxpool(conv(input, C), 3, stride=-2)", "stride"),
    ("range-maxpool-stride-zero", "maxpool(conv(input, C), 3, stride=0)", "stride"),
    ("range-maxpool-padding-5-k-3", "maxpool(conv(input, C), 3, padding=5)", "padding"),
    ("range-maxpool-padding-2-k-3", "maxpool(conv(input, C), 3, padding=2)", "padding"),
    ("range-maxpool-k-zero", "maxpool(conv(input, C), 0)", "`k`"),
    ("range-lrelu-slope-inf", "lrelu(conv(input, C), 1e999)", "finite"),
    ("range-lrelu-slope-inf-keyword", "lrelu(conv(input, C), slope=1e400)", "finite"),
    ("range-lrelu-slope-nan", "lrelu(conv(input, C), 1e999 - 1e999)", "finite"),
    ("range-pixel-shuffle-zero", "pixel_shuffle(conv(input, C), 0)", "positive"),
    ("range-conv-bool-out", "conv(input, true)", "integer"),
    ("range-conv-float-k", "conv(input, C, k=2.5)", "integer"),
]:
    reject(id_, net("x = " + call), message, 2)
reject("range-split-zero", net(STEM, "a, b = split(x, 8, 0)", out="a + b"), "split", 3)
accept("range-maxpool-padding-1-k-3-ok", net("x = maxpool(conv(input, C), 3, stride=1, "
                                             "padding=1)"))
accept("range-conv-padding-0-ok", net("x = resize(conv(input, C, padding=0), input)"))
accept("range-conv-stride-2-ok", net("x = resize(conv(input, C, stride=2), input)"))
accept("range-lrelu-slope-ok", net("x = lrelu(conv(input, C), 0.2)"))

# ------------------------------------------------------------ output channels, empty sizes
reject("output-5-channels-for-3", net(STEM).replace("conv(x, 12, k=3)", "conv(x, 20, k=3)"),
       "output channels", 3)
reject("output-3-channels-for-1",
       net(STEM, params="input: 1, C = 8"), "output channels", 3)
accept("output-1-channel-for-1",
       net(STEM, params="input: 1, C = 8").replace("conv(x, 12, k=3)", "conv(x, 4, k=3)"))
reject("empty-size-flops-hr-1x1", net(STEM), "empty", 1, "--hr", "1x1", command="flops")
reject("empty-size-flops-hr-3x3-window",
       net("a = conv(input, C, k=5, padding=0)", "x = resize(a, input)"), "empty", 2,
       "--hr", "6x6", command="flops")
reject("empty-size-default-hr",
       net("a = conv(input, C, k=255, padding=0)", "b = conv(a, C, k=255, padding=0)",
           "x = resize(b, input)"), "empty", 3)
accept("empty-size-flops-hr-small-ok", net(STEM), "--hr", "8x8")
reject("empty-size-compile-input-size-3x3",
       net("a = conv(input, C, k=5, padding=0)", "x = resize(a, input)"), "too small", 2,
       "--input-size", "3x3", command="compile")

# ------------------------------------------------------------ naming collisions
reject("naming-plain-name-in-loop",
       net(STEM, "for i in 1..3 {", "    y = conv(x, C)", "}"), "every iteration", 4)
reject("naming-plain-name-in-nested-loop",
       net(STEM, "for i in 1..2 {", "    for j in 1..2 {", "        y = relu(x)", "    }", "}"),
       "every iteration", 5)
accept("naming-integer-let-in-loop-ok",
       net("b[0] = conv(input, C)", "for i in 1..2 {",
           "    b[i] = conv(b[i - 1], C * i // i)", "}", out="b[2]"))
accept("naming-pick-expression-candidates",
       net(STEM, "y = sum(pick 1 of [conv(x, C, k=3), conv(x, C, k=5)])", out="y"))
reject("naming-op-calls-collide",
       "op o(x: C) {\n    return conv(x, C)\n}\nop o_2(x: C) {\n    return conv(x, C)\n}\n"
       + net(STEM, "t = o(x) + o(x) + o_2(x)", out="t"), "one name", 5)
reject("naming-op-calls-collide-chain",
       "op o(x: C) {\n    return conv(x, C)\n}\nop o_2(x: C) {\n    return conv(x, C)\n}\n"
       + net(STEM, "t = o(x) + o(x) + o_2(x)", out="t"), "in expansion of `o_2`", 5)
reject("naming-loop-var-shadows-param",
       net("b[0] = conv(input, C)", "for C in 1..2 {", "    b[C] = conv(b[C - 1], 8)", "}",
           out="b[2]"), "shadows", 3)
reject("naming-loop-var-shadows-value",
       net(STEM, "for x in 1..2 {", "    b[x] = conv(input, 8)", "}", out="b[2]"),
       "shadows", 3)
reject("naming-loop-var-shadows-outer-loop",
       net("b[0] = conv(input, C)", "for i in 1..2 {", "    for i in 1..2 {",
           "        b[i] = conv(b[0], C)", "    }", "}", out="b[2]"), "shadows", 4)

# ------------------------------------------------------------ --set strictness
reject("set-underscore-digits", net(STEM), "must be an integer", 1, "--set", "C=3_2")
reject("set-full-width-digits", net(STEM), "must be an integer", 1, "--set", "C=３２")
reject("set-arabic-indic-digits", net(STEM), "must be an integer", 1, "--set", "C=٣٢")
reject("set-float", net(STEM), "must be an integer", 1, "--set", "C=8.0")
reject("set-expression", net(STEM), "must be an integer", 1, "--set", "C=4*2")
reject("set-repeated", net(STEM), "given twice", None, "--set", "C=8", "--set", "C=16")
reject("set-repeated-compile", net(STEM), "given twice", None, "--set", "C=8", "--set", "C=8",
       command="compile")
reject("set-unknown-name", net(STEM), "t.space:1:11: error: --set D: no network in `n`", 1,
       "--set", "D=8")
reject("set-unknown-name-did-you-mean", net(STEM, params="C = 8, cells = 2"),
       "did you mean `cells`?", 1, "--set", "cels=8")
reject("set-unknown-name-dlsr", "", "no network in `dlsr` has a parameter `D`", None,
       "--set", "D=8")
reject("set-unknown-name-network-without-parameters", net("x = conv(input, 8)", params=""),
       "t.space:1:9: error: --set D: no network", 1, "--set", "D=8")
_TWO_NETWORKS = (net(STEM) + "network b(D = 4,\n          scale = 2) {\n"
                 "    x = conv(input, D)\n    return pixel_shuffle(conv(x, 12, k=3), 2)\n}\n")
reject("set-network-b-lacks-C", _TWO_NETWORKS, "t.space:5:11: error: --set C: network `b` has "
       "no parameter `C`", 5, "--network", "b", "--set", "C=8", command="flops")
reject("set-network-b-lacks-C-compile", _TWO_NETWORKS, "parameters of `b`: D, scale", 5,
       "--network", "b", "--set", "C=8", command="compile")
accept("set-negative-sign-ok", net(STEM, "y = conv(x, C + D)", out="y",
                                   params="C = 8, D = 0"), "--set", "D=-4")
accept("set-plus-sign-ok", net(STEM), "--set", "C=+4")

# ------------------------------------------------------------ dead values
accept("dead-value-not-counted", net(STEM, "unused = conv(x, 64, k=7)"),
       warning="never used")
accept("dead-cell-dlsr-cells-1", "", "--set", "cells=1", "--set", "C=8",
       warning="does not reach")

# ------------------------------------------------------------ argument ranges (from the records)
reject("range-lrelu-slope-integer-400-digits",
       net(STEM, "y = lrelu(x, 1" + "0" * 400 + ")", out="y"), "must be a finite number", 3)
reject("range-maxpool-padding-over-half-kernel", net(STEM, "y = maxpool(x, 3, padding=2)",
                                                     out="y"), "half the kernel", 3)
reject("range-maxpool-padding-negative", net(STEM, "y = maxpool(x, 3, padding=-1)", out="y"),
       "t.space:3:31: error: `padding` of `maxpool` must be non-negative, got -1", 3)
reject("range-split-size-zero", net(STEM, "a, b = split(x, 8, 0)", "y = concat(a, b)",
                                    out="y"), "t.space:3:24: error: `sizes` of `split` must be "
       "positive, got 0", 3)
reject("range-pixel-shuffle-factor-zero", net(STEM, "y = pixel_shuffle(x, 0)", out="y"),
       "t.space:3:26: error: `r` of `pixel_shuffle` must be positive, got 0", 3)
reject("range-dwconv-dilation-zero", net(STEM, "y = dwconv(x, dilation=0)", out="y"),
       "`dilation` of `dwconv` must be positive, got 0", 3)

# ------------------------------------------------------------ messages
reject("message-pick-concat-groups",
       net(STEM, "b[1] = conv(x, C)", "b[2] = conv(b[1], C)",
           "y = conv(concat(pick 1 of b[1..2]), C, k=1, groups=2)", out="y"),
       "groups=1 (this conv has groups=2)", 5)
reject("message-pick-concat-feeds-relu",
       net(STEM, "b[1] = conv(x, C)", "b[2] = conv(b[1], C)",
           "y = relu(concat(pick 1 of b[1..2]))", out="y"), "feed a conv", 5)
reject("message-op-body-chain",
       "op bad(x: C) {\n    return conv(x, C, stride=0)\n}\n" + net("x = bad(conv(input, C))"),
       "in expansion of `bad`, called from", 2)
reject("message-op-body-chain-two-levels",
       "op bad(x: C) {\n    return conv(x, C, stride=0)\n}\nop mid(x: C) {\n"
       "    return bad(x)\n}\n" + net("x = mid(conv(input, C))"),
       "in expansion of `mid`, called from", 2)
reject("message-import-directory", 'import "sub"\n' + net(STEM), "is a directory", 1,
       files=(("sub/a.space", b""),))
reject("message-import-device", 'import "/dev/null"\n' + net(STEM), "not a regular file", 1)
reject("message-import-binary", 'import "blob.space"\n' + net(STEM), "not a UTF-8 text file",
       1, files=(("blob.space", b"\x00\x01SECRET\xff\xfe"),))
reject("message-import-nul-text", 'import "nul.space"\n' + net(STEM), "not a UTF-8 text file",
       1, files=(("nul.space", b"op a(x: C) {\x00\n"),))
reject("message-import-missing-folders", 'import "nope/x.space"\n' + net(STEM),
       "cannot find imported file", 1)
reject("message-long-line-100000", net(STEM, "y = x" + " " * 100_000 + " + nope", out="y"),
       "undefined name", 3)
reject("message-emit-py-directory", net(STEM), "is a directory", None, "--emit-py", "{tmp}",
       command="compile")
accept("message-utf8-bom", "\ufeff" + net(STEM))
reject("message-utf8-bom-error-column-true", "\ufeff" + net("x = conv(inptu, C)"),
       "t.space:2:14: error: undefined name `inptu`", 2)
reject("message-missing-brace-at-end-of-file", net(STEM)[:-2] + "\n\n\n",
       "unexpected end of file: missing `}` to close the block opened at 1:18", 3)
reject("message-missing-brace-at-end-of-file-in-op",
       "op f(x: C) {\n    return relu(x)\n\n" ,
       "missing `}` to close the block opened at 1:12", 2)
reject("message-missing-brace-at-end-of-file-fmt", net(STEM)[:-2] + "\n",
       "missing `}` to close the block opened at 1:18", 3, command="fmt")
reject("message-missing-parenthesis-at-end-of-file", net(STEM)[:-2].replace("2)", "2") + "\n",
       "missing `)` to close the `(` opened at 3:25", 3)
reject("message-end-of-file-names-the-open-block", "network n(C = 8) {\n    x = conv(input, C)\n",
       "`{` opened at", 2)
accept("message-utf8-bom-import", 'import "lib.space"\n' + net("x = twice(input)"),
       files=(("lib.space", "\ufeffop twice(x: C) {\n    return conv(x, 8)\n}\n".encode()),))

# ------------------------------------------------------------ comments everywhere
accept("comments-in-parameter-list",
       "network n(C = 8,  # width\n          scale = 2) {\n    x = conv(input, C)\n"
       "    return pixel_shuffle(conv(x, 12, k=3), 2)\n}\n")
accept("comments-in-choice-candidates",
       "choice c = [conv_a,  # the small one\n            conv_b]\n"
       "op conv_a(x: C, out) {\n    return conv(x, out, k=1)\n}\n"
       "op conv_b(x: C, out) {\n    return conv(x, out, k=3)\n}\n"
       "cell k(x: C) {\n    return c(x, C)\n}\n" + net("x = k(conv(input, C))"))
accept("comments-inside-call-arguments",
       net("x = conv(input,  # the image\n             C)"))

# ------------------------------------------------------------ the language, accepted
accept("plain-fixed", net(STEM))
accept("ops-all-primitives", net(
    STEM, "a, b = split(x, 4, 4)", "c = concat(relu(a), sigmoid(b))", "d = prelu(c)",
    "e = d * avgpool(d) + d * mean(d) + std(d) * d", "f = identity(dwconv(e, k=5))",
    "y = resize(maxpool(f, 2), f) + lrelu(f, 0.1)", out="y"))
accept("choice-in-cell-shared",
       "import \"ops.space\"\nchoice light = [conv_1x1, conv_3x3]\n"
       "cell blk(x: C) shares light {\n    return act(light(x) + x)\n}\n"
       + net(STEM, "b[1] = blk(x)", "b[2] = blk(b[1])", out="b[2]"))
accept("choice-in-cell-own",
       "import \"ops.space\"\nchoice light = [conv_1x1, sep_conv_3x3]\n"
       "cell blk(x: C) {\n    return light(x) + x\n}\n"
       + net(STEM, "b[1] = blk(x)", "b[2] = blk(b[1])", out="b[2]"))
accept("pick-concat-fuse",
       net(STEM, "b[1] = conv(x, C)", "b[2] = conv(b[1], C)", "b[3] = conv(b[2], C)",
           "y = conv(concat(pick 2 of b[1..3]), C, k=1)", out="y"))
accept("pick-sum", net(STEM, "b[1] = conv(x, C)", "b[2] = conv(b[1], C)",
                       "y = sum(pick 1 of [b[1], b[2]])", out="y"))
accept("loop-families", net("b[0] = conv(input, C)", "for i in 1..4 {",
                            "    b[i] = relu(conv(b[i - 1], C)) + b[i - 1]", "}",
                            "y = conv(concat(b[1..4]), C, k=1)", out="y"))
accept("integer-lets", net("d = C // 2", "x = conv(conv(input, d), C)"))
accept("dlsr-small", "", "--set", "C=8")
accept("dlsr-cells-3", "", "--set", "C=8", "--set", "cells=3")


# ------------------------------------------------------------ the resolver's classics
_CLASSICS = [
    ("undefined-name", net("x = conv(inptu, C)"), "undefined name", 2),
    ("unknown-op", net("x = convv(input, C)"), "unknown op", 2),
    ("missing-argument", net("x = conv(input)"), "missing argument", 2),
    ("too-many-arguments", net("x = relu(input, input)"), "arguments", 2),
    ("unknown-keyword", net("x = conv(input, C, kernel=3)"), "no parameter", 2),
    ("keyword-twice", net("x = conv(input, C, k=3, k=5)"), "twice", 2),
    ("duplicate-value", net(STEM, "x = relu(x)"), "duplicate definition", 3),
    ("use-before-definition", net("x = conv(y, C)", "y = conv(input, C)"), "before", 2),
    ("self-reference", net("x = conv(x, C)"), "itself", 2),
    ("reserved-input", net("input = conv(input, C)", "x = input"), "reserved", 2),
    ("channel-mismatch-add", net(STEM, "y = x + input", out="y"), "channel", 3),
    ("spatial-mismatch-add", net(STEM, "y = x + conv(x, C, stride=2)", out="y"),
     "spatial", 3),
    ("tensor-as-integer", net("x = conv(input, input)"), "tensor", 2),
    ("integer-as-tensor", net("x = relu(C)"), "tensor", 2),
    ("division-not-exact", net("x = conv(input, C / 3)"), "divide exactly", 2),
    ("division-by-zero", net("x = conv(input, C // 0)"), "division by zero", 2),
    ("family-unindexed", net("b[1] = conv(input, C)", "x = b"), "family", 3),
    ("family-missing-member", net("b[1] = conv(input, C)", "x = b[2]"), "not defined", 3),
    ("family-twice", net("b[1] = conv(input, C)", "b[1] = conv(input, C)", out="b[1]"),
     "twice", 3),
    ("empty-slice", net("b[1] = conv(input, C)", "x = concat(b[1..0])"), "empty slice", 3),
    ("pick-too-many", net(STEM, "b[1] = conv(x, C)", "y = sum(pick 2 of [b[1]])", out="y"),
     "cannot pick", 4),
    ("pick-zero", net(STEM, "b[1] = conv(x, C)", "b[2] = conv(x, C)",
                      "y = sum(pick 0 of b[1..2])", out="y"), "positive", 5),
    ("pick-outside-aggregate", net(STEM, "y = relu(pick 1 of [x])", out="y"), "pick", 3),
    ("pick-in-op", "op o(x: C) {\n    return sum(pick 1 of [x])\n}\n" + net("x = o(input)"),
     "network-level", 2),
    ("pick-candidates-differ", net(STEM, "y = sum(pick 1 of [x, input])", out="y"),
     "differ", 3),
    ("recursive-op", "op o(x: C) {\n    return o(x)\n}\n" + net("x = o(input)"),
     "recursive", 2),
    ("mutually-recursive-ops",
     "op a(x: C) {\n    return b(x)\n}\nop b(x: C) {\n    return a(x)\n}\n"
     + net("x = a(input)"), "recursive", 2),
    ("network-called", net(STEM) + "network m(C = 8) {\n    return n(input)\n}\n",
     "network", 6),
    ("choice-in-op", "import \"ops.space\"\nchoice c = [conv_1x1]\n"
     "op o(x: C) {\n    return c(x)\n}\n" + net("x = o(input)"), "choice", 4),
    ("cell-in-op", "cell k(x: C) {\n    return relu(x)\n}\nop o(x: C) {\n    return k(x)\n}\n"
     + net("x = o(input)"), "cell", 5),
    ("empty-choice-name", "choice c = [nope]\n" + net(STEM), "unknown op", 1),
    ("candidate-twice", "import \"ops.space\"\nchoice c = [conv_1x1, conv_1x1]\n" + net(STEM),
     "twice", 2),
    ("choice-candidates-disagree", "op one(x: C) {\n    return conv(x, C)\n}\n"
     "op two(x: C) {\n    return conv(x, C * 2)\n}\nchoice c = [one, two]\n"
     "cell k(x: C) {\n    return c(x)\n}\n" + net("x = k(conv(input, C))"), "disagree", 9),
    ("shares-unknown-choice", "cell k(x: C) shares nope {\n    return relu(x)\n}\n"
     + net("x = k(conv(input, C))"), "no choice", 1),
    ("scale-mismatch", net(STEM, params="C = 8, scale = 3"), "scale", 3),
    ("not-an-upscaling", "network n(C = 8) {\n    return conv(input, 3, stride=2)\n}\n",
     "upscaling", 2),
    ("rgb-range-bad", net(STEM, params="C = 8, rgb_range = 7"), "rgb_range", 1),
    ("no-default", net(STEM, params="C"), "no default", 1),
    ("two-inputs", net("x = conv(a, C)", params="a: 3, b: 3, C = 8"), "one image input", 1),
    ("primitive-redefined", "op conv(x: C) {\n    return relu(x)\n}\n" + net(STEM),
     "primitive", 1),
    ("duplicate-op", "op o(x: C) {\n    return relu(x)\n}\nop o(x: C) {\n    return x\n}\n"
     + net(STEM), "duplicate definition", 4),
    ("duplicate-parameter", net(STEM, params="C = 8, C = 4"), "duplicate parameter", 1),
    ("many-to-one", net(STEM, "a, b = relu(x)", out="a"), "names on the left", 3),
    ("split-not-adding-up", net(STEM, "a, b = split(x, 4, 5)", out="a"), "add up", 3),
    ("pixel-shuffle-indivisible", net(STEM, "y = pixel_shuffle(x, 3)", out="y"),
     "divisible", 3),
    ("even-kernel-same-padding", net("x = conv(input, C, k=4)"), "odd kernel", 2),
    ("cyclic-import", 'import "t.space"\n' + net(STEM), "cyclic import", 1),
    ("syntax-missing-paren", net("x = conv(input, C"), "", 3),
    ("syntax-bad-character", net("x = conv(input, C) $"), "", 2),
    ("syntax-unterminated-string", 'import "ops.space\n' + net(STEM), "", 1),
    ("keyword-as-name", net("for = conv(input, C)", "x = for"), "", 2),
    ("loop-bound-tensor", net("b[0] = conv(input, C)", "for i in 1..input {",
                              "    b[i] = relu(b[i - 1])", "}", out="b[0]"), "", 3),
    ("index-tensor", net("b[1] = conv(input, C)", "x = b[input]"), "", 3),
    ("no-network-output", "network n(C = 8) {\n    return 3\n}\n", "", 2),
    ("unicode-name", net("x = conv(inpüt, C)"), "", 2),
]
for id_, text, message, line in _CLASSICS:
    reject(f"classic-{id_}", text, message, line)
# once rejected, now the language's scalar arithmetic (issue 11): they must run end to end
accept("classic-tensor-times-number", net(STEM, "y = x * 2", out="y"))
accept("classic-tensor-minus-tensor", net(STEM, "y = x - x", out="y"))
accept("classic-unused-tensor-plus-number", net("x = conv(input, C)", "y = x + 1", out="x"),
       warning="never used")
