"""Golden tests of the rendered diagnostics: the exact text a user sees.

Each case is a small spec and the complete rendering of the `SpecError` it
raises: `file:line:col: severity: message`, the source line, a caret line under
the culprit, and an optional hint.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest

from spacelang.program import LIBRARY_DIR

CASES = [
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C k=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:23: error: unexpected `k`; expected `)`, `,`, `(`, `*`, `+`, `-`, ...
              a = conv(input, C k=3)
                                ^
        """,
        id="unexpected_token",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C, k=3) $ 2
            return a
        }
        """,
        """\
        t.space:2:29: error: unexpected character `$`
              a = conv(input, C, k=3) $ 2
                                      ^
        """,
        id="unexpected_character",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C, k=3)
        """,
        """\
        t.space:2:28: error: unexpected end of file; expected `for`, `return`, `shares`, a name, `*`, `+`, ...
              a = conv(input, C, k=3)
                                     ^
          note: `{` opened at t.space:1:29 is not closed
        """,  # noqa: E501
        id="unexpected_eof",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C, k=3)
            return pixel_shuffle(a, scale)


        """,
        """\
        t.space:3:35: error: unexpected end of file: missing `}` to close the block opened at 1:29
              return pixel_shuffle(a, scale)
                                            ^
        """,
        id="missing_closing_brace_at_end_of_file",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C, k=3
        """,
        """\
        t.space:2:27: error: unexpected end of file: missing `)` to close the `(` opened at 2:13
              a = conv(input, C, k=3
                                    ^
        """,
        id="missing_closing_parenthesis_at_end_of_file",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            in = conv(input, 12)
            return pixel_shuffle(in, scale)
        }
        """,
        """\
        t.space:2:5: error: unexpected `in`; expected `for`, `return`, a name
              in = conv(input, 12)
              ^~
          hint: `in` is a keyword and cannot be used as a name
        """,
        id="keyword_as_name",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(inptu, 12, k=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:14: error: undefined name `inptu`
              a = conv(inptu, 12, k=3)
                       ^~~~~
          hint: did you mean `input`?
        """,
        id="undefined_name",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = convv(input, 12, k=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:9: error: unknown op `convv`
              a = convv(input, 12, k=3)
                  ^~~~~
          hint: did you mean `conv`?
        """,
        id="unknown_op",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12, k=3)
            a = conv(a, 12, k=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:3:5: error: duplicate definition of `a`
              a = conv(a, 12, k=3)
              ^
          hint: `a` was first defined at line 2; values are assigned once (use b[i] for a family of values)
        """,  # noqa: E501
        id="duplicate_value",
    ),
    pytest.param(
        """\
        op f(x: c) {
            return x
        }

        op f(x: c) {
            return relu(x)
        }
        """,
        """\
        t.space:5:4: error: duplicate definition of `f`
          op f(x: c) {
             ^
          hint: first defined at t.space:1:4
        """,
        id="duplicate_definition",
    ),
    pytest.param(
        """\
        op conv(x: c) {
            return x
        }
        """,
        """\
        t.space:1:4: error: `conv` is a primitive op and cannot be redefined
          op conv(x: c) {
             ^~~~
        """,
        id="primitive_redefined",
    ),
    pytest.param(
        """\
        op f(x: c, x: d) {
            return x
        }
        """,
        """\
        t.space:1:12: error: duplicate parameter `x`
          op f(x: c, x: d) {
                     ^~~~
        """,
        id="duplicate_parameter",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12, 3, 1, 1, 1, true, 0, 5)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:9: error: `conv` takes at most 8 arguments (x, out, k, stride, dilation, groups, bias, padding), got 9
              a = conv(input, 12, 3, 1, 1, 1, true, 0, 5)
                  ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
        """,  # noqa: E501
        id="too_many_arguments",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12, kk=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:25: error: `conv` has no parameter `kk`
              a = conv(input, 12, kk=3)
                                  ^~~~
          hint: did you mean `k`?
        """,
        id="unknown_keyword",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12, out=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:25: error: `out` given twice in call to `conv`
              a = conv(input, 12, out=3)
                                  ^~~~~
        """,
        id="keyword_twice",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, k=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:9: error: `conv` is missing argument `out`
              a = conv(input, k=3)
                  ^~~~~~~~~~~~~~~~
        """,
        id="missing_argument",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, k=3, 12)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:26: error: positional argument follows keyword argument
              a = conv(input, k=3, 12)
                                   ^~
        """,
        id="positional_after_keyword",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(b, 12)
            b = conv(a, 12)
            return pixel_shuffle(b, scale)
        }
        """,
        """\
        t.space:2:14: error: `b` is used before it is defined (a cycle or a misordered statement)
              a = conv(b, 12)
                       ^
          hint: values are defined in order; move the definition up
        """,
        id="use_before_definition",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(a, 12)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:14: error: `a` is defined in terms of itself
              a = conv(a, 12)
                       ^
        """,
        id="self_reference",
    ),
    pytest.param(
        """\
        op f(x: c) {
            return g(x)
        }

        op g(x: c) {
            return f(relu(x))
        }
        """,
        """\
        t.space:2:12: error: `f` is recursive: f → g → f
              return g(x)
                     ^
        t.space:6:12: error: `g` is recursive: g → f → g
              return f(relu(x))
                     ^
        """,
        id="recursive_op",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C / 3, k=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:21: error: `C / 3` does not divide exactly: 8 / 3 = 2.66667
              a = conv(input, C / 3, k=3)
                              ^~~~~
          hint: use // for floor division
        """,
        id="inexact_division",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C // (scale - 2), k=3)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:21: error: division by zero in `C // (scale - 2)`
              a = conv(input, C // (scale - 2), k=3)
                              ^~~~~~~~~~~~~~~~
        """,
        id="division_by_zero",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(a, 12)
            return pixel_shuffle(concat(pick 3 of [a, b]), scale)
        }
        """,
        """\
        t.space:4:33: error: cannot pick 3 of 2 candidates
              return pixel_shuffle(concat(pick 3 of [a, b]), scale)
                                          ^~~~~~~~~~~~~~~~
        """,
        id="pick_too_many",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(a, 12)
            return pixel_shuffle(concat(pick 0 of [a, b]), scale)
        }
        """,
        """\
        t.space:4:38: error: pick count must be positive, got 0
              return pixel_shuffle(concat(pick 0 of [a, b]), scale)
                                               ^
        """,
        id="pick_not_positive",
    ),
    pytest.param(
        """\
        choice nothing = []
        """,
        """\
        t.space:1:1: error: choice `nothing` has no candidates
          choice nothing = []
          ^~~~~~~~~~~~~~~~~~~
        """,
        id="empty_choice",
    ),
    pytest.param(
        """\
        import "nope.space"
        """,
        f"""\
        t.space:1:1: error: cannot find imported file `nope.space`
          import "nope.space"
          ^~~~~~~~~~~~~~~~~~~
          hint: looked in ., {LIBRARY_DIR}
        """,
        id="missing_import",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(input, 8)
            c = a + b
            return pixel_shuffle(c, scale)
        }
        """,
        """\
        t.space:4:9: error: cannot add values with different channel counts: left has 12, right has 8 (`a` and `b`)
              c = a + b
                  ^~~~~
        """,  # noqa: E501
        id="add_channels",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            c = mul(a, conv(a, 4))
            return pixel_shuffle(c, scale)
        }
        """,
        """\
        t.space:3:9: error: cannot multiply values with different channel counts: left has 12, right has 4 (`a` and `conv(...)`)
              c = mul(a, conv(a, 4))
                  ^~~~~~~~~~~~~~~~~~
        """,  # noqa: E501
        id="mul_channels",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(input, 12, stride=2)
            c = a * b
            return pixel_shuffle(c, scale)
        }
        """,
        """\
        t.space:4:9: error: cannot multiply values with different spatial sizes: left is H×W, right is (H-1)//2+1×(W-1)//2+1 (`a` and `b`)
              c = a * b
                  ^~~~~
        """,  # noqa: E501
        id="mul_spatial",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(input, 12, stride=2)
            c = concat(a, b)
            return pixel_shuffle(c, scale)
        }
        """,
        """\
        t.space:4:19: error: cannot concat values: spatial sizes differ (H×W vs (H-1)//2+1×(W-1)//2+1)
              c = concat(a, b)
                            ^
        """,  # noqa: E501
        id="concat_spatial",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            x, y = split(a, 4, 4)
            return pixel_shuffle(concat(x, y), scale)
        }
        """,
        """\
        t.space:3:18: error: split sizes 4 + 4 = 8 do not add up to the input's 12 channels
              x, y = split(a, 4, 4)
                           ^
        """,
        id="split_sizes",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            x, y = split(a, 4, 4, 4)
            return pixel_shuffle(concat(x, y), scale)
        }
        """,
        """\
        t.space:3:5: error: 2 names on the left but the right gives 3 values
              x, y = split(a, 4, 4, 4)
              ^~~~~~~~~~~~~~~~~~~~~~~~
        """,
        id="split_targets",
    ),
    pytest.param(
        """\
        cell k(x: 8) {
            return conv(x, 8)
        }

        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            return pixel_shuffle(k(a), scale)
        }
        """,
        """\
        t.space:7:28: error: `k` expects `x` with 8 channels, got 12
              return pixel_shuffle(k(a), scale)
                                     ^
        """,
        id="cell_channels",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(input, 8)
            return pixel_shuffle(concat(pick 1 of [a, b]), scale)
        }
        """,
        """\
        t.space:4:33: error: pick candidates differ: `a` has 12 channels (H×W), `b` has 8 (H×W)
              return pixel_shuffle(concat(pick 1 of [a, b]), scale)
                                          ^~~~~~~~~~~~~~~~
        """,
        id="pick_differ",
    ),
    pytest.param(
        """\
        choice widths = [conv(8), conv(12)]

        network n(C = 8, scale = 2) {
            a = widths(input)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:4:9: error: candidates of choice `widths` disagree: `conv(8)` gives 8 channels (H×W), `conv(12)` gives 12 (H×W)
              a = widths(input)
                  ^~~~~~~~~~~~~
        """,  # noqa: E501
        id="choice_disagree",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(input, 12)
            c = pick 1 of [a, b]
            return pixel_shuffle(c, scale)
        }
        """,
        """\
        t.space:4:9: error: `pick` must be the only argument of `concat(...)` or `sum(...)`
              c = pick 1 of [a, b]
                  ^~~~~~~~~~~~~~~~
        """,
        id="pick_outside",
    ),
    pytest.param(
        """\
        choice act = [relu, sigmoid]

        op f(x: c) {
            return act(x)
        }
        """,
        """\
        t.space:4:12: error: choice `act` used in op `f`; choices belong in cells and networks
              return act(x)
                     ^~~
        """,
        id="choice_in_op",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b[1] = conv(a, 12)
            return pixel_shuffle(b[a], scale)
        }
        """,
        """\
        t.space:4:28: error: expected an integer, but `a` is a tensor
              return pixel_shuffle(b[a], scale)
                                     ^
        """,
        id="tensor_as_int_index",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(input, a)
            return pixel_shuffle(b, scale)
        }
        """,
        """\
        t.space:3:21: error: `out` of `conv` must be a number, got a tensor
              b = conv(input, a)
                              ^
        """,
        id="tensor_as_int_arg",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b = conv(a, 12) // 2
            return pixel_shuffle(b, scale)
        }
        """,
        """\
        t.space:3:9: error: `//` is not defined on tensors; a tensor and a number combine with *, /, + and -
              b = conv(a, 12) // 2
                  ^~~~~~~~~~~~~~~~
        """,  # noqa: E501
        id="tensor_number_floordiv",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12) - [0.4, 0.5, 0.6]
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:2:27: error: the constant has 3 values, but the tensor has 12 channels
              a = conv(input, 12) - [0.4, 0.5, 0.6]
                                    ^~~~~~~~~~~~~~~
        """,
        id="constant_channels",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            return upsample(input, scale, mode="cubic")
        }
        """,
        """\
        t.space:2:40: error: `mode` of `upsample` must be "nearest" or "bilinear", got "cubic"
              return upsample(input, scale, mode="cubic")
                                                 ^~~~~~~
        """,
        id="upsample_mode",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            return upsample(input, scale, mode=2)
        }
        """,
        """\
        t.space:2:40: error: `mode` of `upsample` must be "nearest" or "bilinear", got 2
              return upsample(input, scale, mode=2)
                                                 ^
        """,
        id="mode_number",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            return upsample(input, "two")
        }
        """,
        """\
        t.space:2:28: error: `r` of `upsample` must be a number, got the string "two"
              return upsample(input, "two")
                                     ^~~~~
        """,
        id="string_as_number",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C)
            b = conv(a, C) shares c
            return pixel_shuffle(conv(b, 12), scale)
        }
        """,
        """\
        t.space:3:27: error: undefined name `c`
              b = conv(a, C) shares c
                                    ^
        """,
        id="shares_unknown",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C)
            b = conv(a, C, k=5) shares a
            return pixel_shuffle(conv(b, 12), scale)
        }
        """,
        """\
        t.space:3:32: error: cannot share the weights of `a`: its `a` maps 3 → 8 channels, but here `b` maps 8 → 8 channels
              b = conv(a, C, k=5) shares a
                                         ^
        """,  # noqa: E501
        id="shares_shape",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, C)
            b = relu(a) shares a
            return pixel_shuffle(conv(b, 12), scale)
        }
        """,
        """\
        t.space:3:9: error: a statement that shares weights needs exactly one call with weights; this one has none
              b = relu(a) shares a
                  ^~~~~~~
        """,  # noqa: E501
        id="shares_no_weights",
    ),
    pytest.param(
        """\
        cell c(x: C) {
            y = conv(x, C) shares x
            return y
        }
        network n(C = 8, scale = 2) {
            return pixel_shuffle(conv(c(conv(input, C)), 12), scale)
        }
        """,
        """\
        t.space:2:27: error: `x` was not made by one call with weights, so there are no weights to share
              y = conv(x, C) shares x
                                    ^
          note: in expansion of `c`, called from t.space:6:31
        """,  # noqa: E501
        id="shares_input",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            return conv_transpose(input, 3, k=4, stride=2)
        }
        """,
        """\
        t.space:2:12: error: the default padding needs an odd kernel, got k=4; give padding= explicitly
              return conv_transpose(input, 3, k=4, stride=2)
                     ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
        """,  # noqa: E501
        id="transpose_even",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            return upsample(local_maxpool(input, k=2), 2)
        }
        """,
        """\
        t.space:2:21: error: a local pool keeps the size, so its kernel must be odd and positive, got k=2
              return upsample(local_maxpool(input, k=2), 2)
                              ^~~~~~~~~~~~~~~~~~~~~~~~~
        """,  # noqa: E501
        id="local_pool_even",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            return upsample(input, [2, 2])
        }
        """,
        """\
        t.space:2:28: error: `r` of `upsample` must be one number, got [2, 2]
              return upsample(input, [2, 2])
                                     ^~~~~~
        """,
        id="vector_as_int",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a0 = conv(input, C)
            a = conv(a0, C)
            b = conv(a, C, k=5) shares a
            return pixel_shuffle(conv(b, 12), scale)
        }
        """,
        """\
        t.space:4:32: error: cannot share the weights of `a`: its `a` has k=3, padding=1, but here `b` has k=5, padding=2
              b = conv(a, C, k=5) shares a
                                         ^
        """,  # noqa: E501
        id="shares_args",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            s = conv(input, C)
            for i in 1..2 {
                t = conv(s, C)
            }
            return pixel_shuffle(conv(t, 12), scale)
        }
        """,
        """\
        t.space:4:9: error: `t` is assigned in every iteration of the loop over `i`, so its ops would all have one name
                  t = conv(s, C)
                  ^
          hint: make it a family of values: t[i] = ...
        t.space:6:31: error: undefined name `t`
              return pixel_shuffle(conv(t, 12), scale)
                                        ^
        """,  # noqa: E501
        id="plain_name_in_loop",
    ),
    pytest.param(
        """\
        choice light = [relu, sigmoid]

        cell pair(x: C) shares light {
            return light(x) + x
        }

        choice block = [pair, identity]

        network n(C = 4, scale = 2) {
            a = block(conv(input, C))
            b = block(a)
            return pixel_shuffle(conv(b, 12), scale)
        }
        """,
        """\
        t.space:4:12: error: choice `light` is shared by cell `pair`, whose instances here hang under different choices; a shared choice inside a candidate cell needs one parent site
              return light(x) + x
                     ^~~~~~~~
          hint: drop `shares light` from cell `pair`
          note: in expansion of `pair`, called from t.space:7:17
        """,  # noqa: E501
        id="shared_choice_two_parents",
    ),
    pytest.param(
        """\
        choice light = [relu, sigmoid]

        cell searched(x: C) {
            return conv(light(x), C)
        }

        cell plain(x: C) {
            return conv(relu(x), C)
        }

        network n(C = 4, scale = 2) {
            a = conv(input, C)
            b1 = searched(a)
            b2 = plain(b1) shares b1
            return pixel_shuffle(conv(b2, 12), scale)
        }
        """,
        """\
        t.space:14:27: error: `b1` was made by a call with choices or picks, whose weights cannot be shared
              b2 = plain(b1) shares b1
                                    ^~
        """,  # noqa: E501
        id="shares_from_choice_cell",
    ),
    pytest.param(
        """\
        choice block = [relu, n]

        network n(C = 4, scale = 2) {
            return pixel_shuffle(conv(block(input), 12), scale)
        }
        """,
        """\
        t.space:1:23: error: `n` is a network and cannot be called
          choice block = [relu, n]
                                ^
        t.space:1:23: error: candidate `n` of choice `block` is not an op or a cell
          choice block = [relu, n]
                                ^
        """,
        id="candidate_network",
    ),
    pytest.param(
        """\
        network n(C = 4, scale = 2) {
            return upsample(affine(input, [1, 2]), scale)
        }
        """,
        """\
        t.space:2:21: error: the constant has 2 values, but the tensor has 3 channels
              return upsample(affine(input, [1, 2]), scale)
                              ^~~~~~~~~~~~~~~~~~~~~
        """,
        id="affine_channels",
    ),
    pytest.param(
        """\
        network n(C = 4, scale = 2) {
            return upsample(2 / input, scale)
        }
        """,
        """\
        t.space:2:21: error: cannot divide a number by a tensor
              return upsample(2 / input, scale)
                              ^~~~~~~~~
        """,
        id="number_over_tensor",
    ),
    pytest.param(
        """\
        network n(C = 4, scale = 2) {
            a = conv(input, C)
            b = conv(a, C) shares C
            return pixel_shuffle(conv(b, 12), scale)
        }
        """,
        """\
        t.space:3:27: error: `C` is a number; `shares` names a value made by a call with weights
              b = conv(a, C) shares C
                                    ^
        """,
        id="shares_a_number",
    ),
    pytest.param(
        """\
        network n(C = 12, scale = 2, rgb_range = 3) {
            return pixel_shuffle(conv(input, C), scale)
        }
        """,
        """\
        t.space:1:30: error: rgb_range must be 1 or 255, got 3
          network n(C = 12, scale = 2, rgb_range = 3) {
                                       ^~~~~~~~~~~~~
        """,
        id="rgb_range",
    ),
    pytest.param(
        """\
        network n(C = 12, scale = 3) {
            a = conv(input, C)
            return pixel_shuffle(a, 2)
        }
        """,
        """\
        t.space:3:12: error: network `n` has scale = 3 but its output is 2× its input
              return pixel_shuffle(a, 2)
                     ^~~~~~~~~~~~~~~~~~~
        """,
        id="scale_mismatch",
    ),
    pytest.param(
        """\
        network n(C = 12, scale = 2) {
            return conv(input, C, stride=2)
        }
        """,
        """\
        t.space:2:12: error: the network's output is not an integer upscaling of its input; its size is (H-1)//2+1×(W-1)//2+1
              return conv(input, C, stride=2)
                     ^~~~~~~~~~~~~~~~~~~~~~~~
        """,  # noqa: E501
        id="not_upscaling",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 10)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:3:26: error: pixel_shuffle(2) needs channels divisible by 4, got 10
              return pixel_shuffle(a, scale)
                                   ^
        """,
        id="pixel_shuffle_divisible",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            b[1] = conv(input, 12)
            return pixel_shuffle(b[2], scale)
        }
        """,
        """\
        t.space:3:26: error: `b[2]` is not defined (defined so far: b[1])
              return pixel_shuffle(b[2], scale)
                                   ^~~~
        """,
        id="undefined_family_member",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            b[1] = conv(input, 12)
            return pixel_shuffle(b, scale)
        }
        """,
        """\
        t.space:3:26: error: `b` is a family of values; index it, as in b[1]
              return pixel_shuffle(b, scale)
                                   ^
        """,
        id="family_unindexed",
    ),
    pytest.param(
        """\
        network m() {
            return pixel_shuffle(conv(input, 12), 2)
        }

        network n(C = 8, scale = 2) {
            a = m(input)
            return a
        }
        """,
        """\
        t.space:6:9: error: `m` is a network and cannot be called
              a = m(input)
                  ^
        """,
        id="network_called",
    ),
    pytest.param(
        """\
        op f(x: c, width = c) {
            return conv(x, width)
        }

        network n(C = 8, scale = 2) {
            a = f(input, widht=12)
            return pixel_shuffle(a, scale)
        }
        """,
        """\
        t.space:6:18: error: `f` has no parameter `widht`
              a = f(input, widht=12)
                           ^~~~~~~~
          hint: did you mean `width`?
        """,
        id="unknown_op_keyword",
    ),
    pytest.param(
        """\
        network n(C, scale = 2) {
            return pixel_shuffle(conv(input, 3 * scale * scale), scale)
        }
        """,
        """\
        t.space:1:11: error: parameter `C` of network `n` has no default
          network n(C, scale = 2) {
                    ^
          hint: give one with --set C=...
        """,
        id="required_without_default",
    ),
    pytest.param(
        """\
        network n(C = 8, scale = 2) {
            a = conv(input, 12)
            b[0] = a
            for i in 1..a {
                b[i] = conv(b[i - 1], 12)
            }
            return pixel_shuffle(b[1], scale)
        }
        """,
        """\
        t.space:4:17: error: expected an integer, but `a` is a tensor
              for i in 1..a {
                          ^
        """,
        id="loop_bound_tensor",
    ),
    pytest.param(
        """\
        choice light = [relu]

        cell k(x: C) shares lihgt {
            return x
        }
        """,
        """\
        t.space:3:21: error: `shares lihgt`: no choice named `lihgt`
          cell k(x: C) shares lihgt {
                              ^~~~~
          hint: did you mean `light`?
        """,
        id="shares_unknown",
    ),

]


@pytest.mark.parametrize("source, expected", CASES)
def test_rendered_diagnostic(spec_error, source, expected):
    assert spec_error(source) == textwrap.dedent(expected).rstrip("\n")


# ------------------------------------------------------------------ more than one file, overrides


def test_missing_import_names_the_folders_searched(spec_error):
    assert spec_error('import "nope.space"\n') == textwrap.dedent(f"""\
        t.space:1:1: error: cannot find imported file `nope.space`
          import "nope.space"
          ^~~~~~~~~~~~~~~~~~~
          hint: looked in ., {LIBRARY_DIR}""")


def test_cyclic_import(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.space").write_text('import "b.space"\n\nop fa(x: c) {\n    return x\n}\n')
    (tmp_path / "b.space").write_text('import "a.space"\n\nop fb(x: c) {\n    return x\n}\n')
    code, out, err = cli("check", "a.space")
    assert code == 2
    assert out == ""
    assert err == textwrap.dedent("""\
        b.space:1:1: error: cyclic import: a.space → b.space → a.space
          import "a.space"
          ^~~~~~~~~~~~~~~~
        """)


def test_a_file_importing_itself(spec_error, tmp_path):
    path = tmp_path / "self.space"
    source = 'import "self.space"\n'
    path.write_text(source)
    assert spec_error(source, path=str(path)) == textwrap.dedent(f"""\
        {path}:1:1: error: cyclic import: self.space → self.space
          import "self.space"
          ^~~~~~~~~~~~~~~~~~~""")


def test_error_in_an_imported_file_shows_that_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.space").write_text("op f(x: c) {\n    return relu(y)\n}\n")
    (tmp_path / "main.space").write_text('import "lib.space"\n')
    code, _, err = cli("check", "main.space")
    assert code == 2
    assert err == textwrap.dedent("""\
        lib.space:2:17: error: undefined name `y`
              return relu(y)
                          ^
        """)


def test_duplicate_definition_across_files(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.space").write_text("op act(x: c) {\n    return relu(x)\n}\n")
    (tmp_path / "main.space").write_text('import "ops.space"\nimport "lib.space"\n')
    code, _, err = cli("check", "main.space")
    assert code == 2
    assert err == textwrap.dedent(f"""\
        lib.space:1:4: error: duplicate definition of `act`
          op act(x: c) {{
             ^~~
          hint: first defined at {LIBRARY_DIR / "ops.space"}:7:4
        """)


def test_set_unknown_parameter_suggests_the_closest(cli):
    code, out, err = cli("check", "spaces/dlsr.space", "--set", "Cc=16")
    assert (code, out) == (2, "")
    assert err == textwrap.dedent("""\
        spaces/dlsr.space:33:14: error: --set Cc: no network in `dlsr` has a parameter `Cc`
          network dlsr(C = 48, scale = 2, cells = 6, rgb_range = 255) {
                       ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
          hint: did you mean `C`?
        """)


def test_set_non_integer_value(cli):
    code, out, err = cli("check", "spaces/dlsr.space", "--set", "C=wide")
    assert (code, out) == (2, "")
    assert err.startswith("spaces/dlsr.space:33:14: error: --set C=wide: the value must be an "
                          "integer\n")


def test_set_without_a_value(cli):
    code, _, err = cli("check", "spaces/dlsr.space", "--set", "C")
    assert code == 2
    assert err == "error: --set expects NAME=VALUE, got 'C'\n"


def test_overrides_through_the_api_use_the_same_words(spec_error):
    source = "network n(C = 8, scale = 2) {\n    return pixel_shuffle(conv(input, 12), scale)\n}\n"
    assert spec_error(source, scael=3) == (
        "t.space:1:11: error: --set scael: no network in `n` has a parameter `scael`\n"
        "  network n(C = 8, scale = 2) {\n"
        "            ^~~~~~~~~~~~~~~~\n"
        "  hint: did you mean `scale`?")


def test_bad_override_value_reaches_elaboration(spec_error):
    source = "network n(C = 8, scale = 2) {\n    return pixel_shuffle(conv(input, C), scale)\n}\n"
    assert spec_error(source, C=10) == textwrap.dedent("""\
        t.space:2:26: error: pixel_shuffle(2) needs channels divisible by 4, got 10
              return pixel_shuffle(conv(input, C), scale)
                                   ^~~~~~~~~~~~~~""")


# ------------------------------------------------------------------ span-less and special


def test_no_network(spec_error):
    assert spec_error("op f(x: c) {\n    return x\n}\n") == "error: t.space defines no network"


def test_several_networks(spec_error):
    one = "network {}(scale = 2) {{\n    return pixel_shuffle(conv(input, 12), scale)\n}}\n"
    assert spec_error(one.format("a") + "\n" + one.format("b")) == (
        "error: t.space defines several networks (a, b); choose one")


def test_integer_literal_too_long(spec_error):
    rendered = spec_error("network n(C = " + "9" * 5000 + ") {\n    return input\n}\n")
    assert rendered.splitlines()[0] == (
        "t.space:1:15: error: integer literal of 5000 digits is too long")


def test_all_errors_of_a_file_are_reported_together(spec_error):
    source = textwrap.dedent("""\
        op f(x: c) {
            a = relu(y)
            b = rleu(x)
            return x
        }
        """)
    assert spec_error(source) == textwrap.dedent("""\
        t.space:2:14: error: undefined name `y`
              a = relu(y)
                       ^
        t.space:3:9: error: unknown op `rleu`
              b = rleu(x)
                  ^~~~
          hint: did you mean `relu`?
        t.space:2:5: warning: `a` is never used
              a = relu(y)
              ^
        t.space:3:5: warning: `b` is never used
              b = rleu(x)
              ^""")


def test_tabs_and_crlf_line_endings_render_cleanly(spec_error):
    source = "network n(scale = 2) {\r\n\treturn pixel_shuffle(conv(inptu, 12), scale)\r\n}\r\n"
    assert spec_error(source) == textwrap.dedent("""\
        t.space:2:28: error: undefined name `inptu`
           return pixel_shuffle(conv(inptu, 12), scale)
                                     ^~~~~
          hint: did you mean `input`?""")


# ------------------------------------------------------------------ warnings


UNUSED = """\
network n(scale = 2) {
    spare = conv(input, 4)
    return pixel_shuffle(conv(input, 12), scale)
}
"""


def test_unused_value_warning(load_text):
    space = load_text(UNUSED)
    (warning,) = space.warnings
    assert warning.render(space.program.sources) == textwrap.dedent("""\
        t.space:2:5: warning: `spare` is never used
              spare = conv(input, 4)
              ^~~~~""")


def test_shared_choice_never_used_warning(load_text):
    space = load_text("""\
        import "ops.space"
        choice light = [conv_1x1, conv_3x3]
        cell k(x: C) shares light {
            return relu(x)
        }
        network n(scale = 2) {
            return pixel_shuffle(conv(k(conv(input, 8)), 12), scale)
        }
        """)
    (warning,) = space.warnings
    assert warning.render(space.program.sources) == textwrap.dedent("""\
        t.space:3:21: warning: cell `k` shares `light` but never uses it
          cell k(x: C) shares light {
                              ^~~~~""")


def test_cli_prints_warnings_and_succeeds(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "warn.space").write_text(UNUSED)
    code, out, err = cli("check", "warn.space")
    assert code == 0
    assert out == "warn.space: network n(scale=2): ×2, 0 cells, fixed\n"
    assert err == textwrap.dedent("""\
        warn.space:2:5: warning: `spare` is never used
              spare = conv(input, 4)
              ^~~~~
        """)


# ------------------------------------------------------------------ the command line


def test_check_summaries(cli):
    code, out, err = cli("check", "spaces/dlsr.space", "spaces/imdn.space", "spaces/ops.space")
    assert code == 0
    assert err == ""
    assert out == (
        "spaces/dlsr.space: network dlsr(C=48, scale=2, cells=6, rgb_range=255): ×2, 6 cells, "
        "3 choice sites (27 α), 3 pick sites (12 β), 131,220 architectures\n"
        "spaces/imdn.space: network imdn(C=64, scale=2, cells=6, rgb_range=1): ×2, 6 cells, "
        "fixed\n"
        "spaces/ops.space: ok (16 ops, 0 cells, 0 choices, no network)\n")


def test_check_with_overrides(cli):
    code, out, _ = cli("check", "spaces/imdn.space", "--set", "C=32", "--set", "scale=4")
    assert code == 0
    assert out.startswith(
        "spaces/imdn.space: network imdn(C=32, scale=4, cells=6, rgb_range=1): ×4")


def test_check_keeps_going_after_a_bad_file(cli, tmp_path):
    bad = tmp_path / "bad.space"
    bad.write_text("op f(x: c) {\n    return y\n}\n")
    code, out, err = cli("check", str(bad), "spaces/rfdn.space", str(tmp_path / "none.space"))
    assert code == 2
    assert out.startswith("spaces/rfdn.space: network rfdn(")
    assert err == textwrap.dedent(f"""\
        {bad}:2:12: error: undefined name `y`
              return y
                     ^
        error: no such file: {tmp_path / "none.space"}
        """)


def test_usage_errors_exit_2(cli):
    code, out, err = cli("check")
    assert (code, out) == (2, "")
    assert err == "error: spacelang check: the following arguments are required: FILE\n"
    code, _, err = cli("nonsense")
    assert code == 2
    assert err.startswith("error: spacelang: argument COMMAND: invalid choice: 'nonsense'")


def test_cli_subprocess_has_no_traceback(tmp_path, repo_root):
    bad = tmp_path / "bad.space"
    bad.write_text("network n( {\n")
    result = subprocess.run([sys.executable, "-m", "spacelang", "check", str(bad)],
                            capture_output=True, text=True, cwd=repo_root, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr == textwrap.dedent(f"""\
        {bad}:1:12: error: unexpected `{{`; expected `)`, a name
          network n( {{
                     ^
        """)


MESSY = "network n(C=8,scale=2){\n a=conv(input,12)  # keep me\n return pixel_shuffle(a,scale)}\n"
TIDY = """\
network n(C = 8, scale = 2) {
    a = conv(input, 12)  # keep me
    return pixel_shuffle(a, scale)
}
"""


def test_fmt_reads_stdin_and_writes_stdout(cli, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(MESSY))
    code, out, err = cli("fmt", "-")
    assert (code, out, err) == (0, TIDY, "")


def test_fmt_check_on_stdin(cli, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(MESSY))
    assert cli("fmt", "--check", "-") == (1, "", "")
    monkeypatch.setattr(sys, "stdin", io.StringIO(TIDY))
    assert cli("fmt", "--check", "-") == (0, "", "")


def test_fmt_syntax_error_on_stdin(cli, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("op f(x: c) {\n    return\n}\n"))
    code, out, err = cli("fmt", "-")
    assert (code, out) == (2, "")
    assert "Traceback" not in err
    assert err == textwrap.dedent("""\
        <stdin>:3:1: error: unexpected `}`; expected `false`, `pick`, `true`, a name, a number, a string, ...
          }
          ^
        """)  # noqa: E501


def test_fmt_check_and_rewrite_files(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "messy.space").write_text(MESSY)
    (tmp_path / "tidy.space").write_text(TIDY)
    assert cli("fmt", "--check", "messy.space", "tidy.space") == (
        1, "would reformat messy.space\n", "")
    assert (tmp_path / "messy.space").read_text() == MESSY
    assert cli("fmt", "messy.space", "tidy.space") == (0, "reformatted messy.space\n", "")
    assert (tmp_path / "messy.space").read_text() == TIDY
    assert cli("fmt", "--check", "messy.space") == (0, "", "")


def test_fmt_of_a_missing_file(cli, tmp_path):
    code, out, err = cli("fmt", str(tmp_path / "gone.space"))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: cannot read {tmp_path / 'gone.space'}")
