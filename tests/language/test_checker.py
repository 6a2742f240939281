"""Checking and elaboration: IR facts of the shipped spaces and of small specs."""

from __future__ import annotations

import pytest

from spacelang.api import check_file, load, loads
from spacelang.ir import GLOBAL, INPUT, Network, Spatial


def nodes_at(network: Network, path: str):
    return [n for n in network.graph.nodes if n.path == path]


def node_at(network: Network, path: str):
    (node,) = nodes_at(network, path)
    return node


# ------------------------------------------------------------------ shipped spaces


@pytest.fixture(scope="module")
def dlsr() -> Network:
    return load("spaces/dlsr.space").network


def test_dlsr_has_three_shared_choice_sites(dlsr):
    assert [s.key for s in dlsr.choice_sites] == ["rfdb.r1", "rfdb.r2", "rfdb.r3"]
    for site in dlsr.choice_sites:
        assert site.choice == "light"
        assert site.shared
        assert len(site.labels) == 9
        assert site.labels[0] == "conv_1x1"
        assert site.labels[-1] == "dil_conv_5x5"
        assert site.instances == tuple(f"b.{i}.{site.key.split('.')[1]}" for i in range(1, 7))


def test_dlsr_has_three_pick_sites(dlsr):
    assert [(s.key, s.k, s.aggregate) for s in dlsr.pick_sites] == [
        ("x.4", 2, "concat"), ("x.5", 2, "concat"), ("x.6", 2, "concat")]
    assert dlsr.pick_sites[0].candidates == ("b[1]", "b[2]", "b[3]")
    assert [s.combinations for s in dlsr.pick_sites] == [3, 6, 10]


def test_dlsr_counts(dlsr):
    assert dlsr.architecture_count == 9**3 * 3 * 6 * 10
    assert dlsr.alpha_count == 27
    assert dlsr.beta_count == 3 + 4 + 5
    assert not dlsr.is_fixed


def test_dlsr_network_facts(dlsr):
    assert dlsr.name == "dlsr"
    assert dlsr.params == {"C": 48, "scale": 2, "cells": 6, "rgb_range": 255}
    assert (dlsr.scale, dlsr.in_channels, dlsr.out_channels, dlsr.rgb_range) == (2, 3, 3, 255)
    assert [(c.path, c.cell) for c in dlsr.cells] == [(f"b.{i}", "rfdb") for i in range(1, 7)]
    assert dlsr.graph.output_node.op == "pixel_shuffle"
    assert dlsr.graph.output_node.spatial == Spatial((("up", 2),))


def test_dlsr_choice_nodes_hold_one_graph_per_candidate(dlsr):
    choices = [n for n in dlsr.graph.nodes if n.op == "choice"]
    assert len(choices) == 18  # 3 sites in each of 6 cells
    for node in choices:
        assert len(node.candidates) == 9
        assert {g.output_node.channels for g in node.candidates} == {48}
        assert node.channels == 48


def test_dlsr_the_third_cell_takes_both_earlier_cells_without_a_pick(dlsr):
    # `pick 2 of b[1..2]` has one outcome, so it is a plain concat
    fuse = node_at(dlsr, "x.3")
    (concat,) = [dlsr.graph.nodes[i] for i in fuse.inputs]
    assert concat.op == "concat"
    assert concat.channels == 96
    picks = [n for n in dlsr.graph.nodes if n.op == "pick"]
    assert [(p.site, p.k, p.channels, len(p.inputs)) for p in picks] == [
        ("x.4", 2, 96, 3), ("x.5", 2, 96, 4), ("x.6", 2, 96, 5)]


def test_dlsr_with_channel_override():
    network = load("spaces/dlsr.space", C=16).network
    assert network.params["C"] == 16
    assert node_at(network, "fea").channels == 16
    assert node_at(network, "b.1.d1").channels == 8
    assert node_at(network, "up").channels == 3 * 2 * 2
    assert network.architecture_count == 9**3 * 3 * 6 * 10


def test_overrides_given_as_strings_like_the_cli():
    network = load("spaces/dlsr.space", C="24", cells="4").network
    assert network.params["C"] == 24
    assert len(network.cells) == 4
    assert [s.key for s in network.pick_sites] == ["x.4"]
    assert network.architecture_count == 9**3 * 3


def test_imdn_is_fixed_with_six_cells():
    network = load("spaces/imdn.space").network
    assert network.is_fixed
    assert network.architecture_count == 1
    assert network.choice_sites == () and network.pick_sites == ()
    assert [c.cell for c in network.cells] == ["imdb"] * 6
    assert network.params == {"C": 64, "scale": 2, "cells": 6, "rgb_range": 1}


def test_imdn_int_let_binding_sets_the_split_sizes():
    network = load("spaces/imdn.space", C=32).network
    splits = [n for n in network.graph.nodes if n.op == "split"]
    assert len(splits) == 6 * 3 * 2  # 3 splits per cell, 2 outputs each
    assert {tuple(n.args["sizes"]) for n in splits} == {(8, 24)}
    assert [n.channels for n in splits[:2]] == [8, 24]
    assert node_at(network, "b.1.c4").channels == 8  # conv(r3, d, k=3)


def test_imdn_cell_choices_take_an_out_argument():
    network = load("spaces/imdn_cell.space").network
    assert [s.key for s in network.choice_sites] == ["imdb.c2", "imdb.c3", "imdb.c4"]
    assert network.architecture_count == 7**3
    c4 = [n for n in network.graph.nodes if n.site == "imdb.c4"]
    assert {n.channels for n in c4} == {16}  # refine(r3, d) with d = 64 // 4
    assert {g.output_node.channels for n in c4 for g in n.candidates} == {16}


def test_rfdn_and_the_derived_dlsr_are_fixed():
    rfdn = load("spaces/rfdn.space").network
    assert rfdn.is_fixed and len(rfdn.cells) == 4 and rfdn.params["C"] == 50
    derived = load("spaces/dlsr_derived.space").network
    assert derived.is_fixed and len(derived.cells) == 6 and derived.rgb_range == 255


def test_ops_library_has_no_network():
    program, result = check_file("spaces/ops.space")
    assert result.networks == ()
    assert result.warnings == ()
    assert len(program.definitions) == 16


@pytest.mark.parametrize("name", ["dlsr", "dlsr_derived", "imdn", "imdn_cell", "rfdn"])
def test_shipped_networks_check_without_warnings(name):
    _, result = check_file(f"spaces/{name}.space")
    assert result.warnings == ()
    (network,) = result.networks
    assert network.name == name
    assert network.source == f"spaces/{name}.space"


# ------------------------------------------------------------------ scale and spatial sizes


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_scale_override_changes_the_upsampler(scale):
    network = load("spaces/rfdn.space", scale=scale).network
    assert network.scale == scale
    assert node_at(network, "up").channels == 3 * scale * scale
    assert network.graph.output_node.spatial == Spatial((("up", scale),))
    assert network.out_channels == 3


def test_scale_three_network(load_text):
    space = load_text("""\
        network tri(C = 18, scale = 3) {
            fea = conv(input, C, k=3)
            up = conv(fea, 3 * scale * scale, k=3)
            return pixel_shuffle(up, scale)
        }
        """)
    assert space.network.scale == 3
    assert space.network.graph.output_node.spatial.describe() == "3H×3W"


def test_two_pixel_shuffles_compose(load_text):
    network = load_text("""\
        network n(scale = 4) {
            a = pixel_shuffle(conv(input, 48, k=3), 2)
            return pixel_shuffle(conv(a, 12, k=3), 2)
        }
        """).network
    assert network.scale == 4
    assert network.out_channels == 3


def test_a_network_without_a_scale_parameter_infers_it(load_text):
    network = load_text("""\
        network n() {
            return pixel_shuffle(conv(input, 12), 2)
        }
        """).network
    assert network.scale == 2
    assert network.params == {}
    assert network.rgb_range == 1


def test_spatial_inference_through_strided_and_pooled_ops(load_text):
    network = load_text("""\
        import "ops.space"
        network n(C = 16) {
            fea = conv(input, C)
            down = conv(fea, C, k=3, stride=2, padding=0)
            pooled = maxpool(down, 7, stride=3)
            back = resize(pooled, fea)
            gate = avgpool(fea)
            mixed = fea * sigmoid(conv(gate, C, k=1)) + back
            return pixel_shuffle(conv(mixed, 12), 2)
        }
        """).network
    assert node_at(network, "down").spatial == INPUT.window(3, 2, 1, 0)
    assert node_at(network, "down").spatial.size(48, 64) == (23, 31)
    assert nodes_at(network, "pooled") == []  # maxpool has no weights, so no path
    maxpool = next(n for n in network.graph.nodes if n.op == "maxpool")
    assert maxpool.spatial.size(48, 64) == (6, 9)
    resize = next(n for n in network.graph.nodes if n.op == "resize")
    assert resize.spatial == INPUT
    assert next(n for n in network.graph.nodes if n.op == "avgpool").spatial == GLOBAL
    assert network.scale == 2


def test_esa_in_ops_library_keeps_size_and_channels(load_text):
    network = load_text("""\
        import "ops.space"
        network n(C = 16) {
            return pixel_shuffle(conv(esa(conv(input, C)), 12), 2)
        }
        """).network
    esa_mul = network.graph.nodes[network.graph.output_node.inputs[0] - 1]
    assert esa_mul.op == "mul"
    assert (esa_mul.channels, esa_mul.spatial) == (16, INPUT)


# ------------------------------------------------------------------ channel inference


def test_channel_inference_through_concat_split_and_ops(load_text):
    network = load_text("""\
        import "ops.space"
        network n(C = 20, scale = 2) {
            a = conv(input, C)
            b = conv(a, C // 2, k=1)
            c = concat(a, b, a)
            d, e, f = split(c, 10, 20, 20)
            g = sep_conv_3x3(e, out=C // 2 + 2 * 3)
            h = dil_conv(f, 5)
            up = conv(concat(h + e, g, d), 3 * scale * scale)
            return pixel_shuffle(up, scale)
        }
        """).network
    channels = {n.path: n.channels for n in network.graph.nodes if n.path}
    assert channels["a"] == 20
    assert channels["b"] == 10
    assert channels["g.sep_conv.half.conv"] == 20  # inlined: sep_conv_3x3 → sep_conv
    assert channels["g.sep_conv.conv"] == 16
    concats = [n.channels for n in network.graph.nodes if n.op == "concat"]
    assert concats == [50, 20 + 16 + 10]
    assert [n.channels for n in network.graph.nodes if n.op == "split"] == [10, 20, 20]
    assert network.out_channels == 3


def test_op_parameter_defaults_depend_on_bound_channels(load_text):
    network = load_text("""\
        op widen(x: c, out = 2 * c) {
            return conv(x, out, k=1)
        }
        network n(scale = 2) {
            fea = conv(input, 6)
            a = widen(fea)
            b = widen(a, out=12)
            return pixel_shuffle(b, scale)
        }
        """).network
    assert node_at(network, "a.conv").channels == 12
    assert node_at(network, "b.conv").channels == 12
    assert network.scale == 2


def test_int_let_bindings(load_text):
    network = load_text("""\
        network n(C = 64, scale = 2) {
            d = C // 4
            rest = C - d
            half = rest / 2
            a = conv(input, C)
            x, y = split(a, d, rest)
            z = conv(y, half)
            return pixel_shuffle(conv(z, 12), scale)
        }
        """).network
    split = next(n for n in network.graph.nodes if n.op == "split")
    assert split.args["sizes"] == [16, 48]
    assert node_at(network, "z").channels == 24


def test_loops_unroll_into_indexed_values(load_text):
    network = load_text("""\
        network n(C = 8, cells = 5, scale = 2) {
            b[0] = conv(input, C)
            for i in 1..cells {
                b[i] = conv(b[i - 1], C + i)
            }
            return pixel_shuffle(conv(concat(b[0..cells]), 12), scale)
        }
        """, cells=3).network
    assert [node_at(network, f"b.{i}").channels for i in range(4)] == [8, 9, 10, 11]
    concat = next(n for n in network.graph.nodes if n.op == "concat")
    assert concat.channels == 8 + 9 + 10 + 11


def test_tensor_input_parameter_sets_the_input_channels(load_text):
    network = load_text("""\
        network gray(image: 1, scale = 2) {
            return pixel_shuffle(conv(image, 4), scale)
        }
        """).network
    assert network.in_channels == 1
    assert network.out_channels == 1
    assert network.graph.nodes[0].path == "image"


def test_pick_inside_a_cell_body_and_sum(load_text):
    network = load_text("""\
        network n(C = 8, scale = 2) {
            a = conv(input, C)
            b = conv(a, C)
            c = conv(b, C)
            s = conv(sum(pick 1 of [a, b, c]), 12)
            return pixel_shuffle(s, scale)
        }
        """).network
    (site,) = network.pick_sites
    assert (site.key, site.k, site.aggregate, site.candidates) == ("s", 1, "sum", ("a", "b", "c"))
    pick = next(n for n in network.graph.nodes if n.op == "pick")
    assert pick.channels == 8
    assert network.architecture_count == 3


def test_unshared_choice_sites_are_one_per_cell(load_text):
    network = load_text("""\
        import "ops.space"
        choice c = [conv_3x3, conv_5x5]
        cell k(x: C) {
            y = c(x)
            return y + x
        }
        network n(C = 8, scale = 2) {
            fea = conv(input, C)
            b[1] = k(fea)
            b[2] = k(b[1])
            return pixel_shuffle(conv(b[2], 12), scale)
        }
        """).network
    assert [(s.key, s.shared, s.instances) for s in network.choice_sites] == [
        ("b.1.y", False, ("b.1.y",)), ("b.2.y", False, ("b.2.y",))]
    assert network.architecture_count == 4


def test_warnings_do_not_stop_the_check(load_text):
    space = load_text("""\
        network n(scale = 2) {
            spare = conv(input, 4)
            return pixel_shuffle(conv(input, 12), scale)
        }
        """)
    assert [w.message for w in space.warnings] == ["`spare` is never used"]
    assert space.network.scale == 2


def test_check_file_with_text_and_several_networks(tmp_path):
    text = ("network a(scale = 2) {\n"
            "    return pixel_shuffle(conv(input, 3 * scale * scale), scale)\n}\n\n"
            "network b(scale = 3) {\n    return pixel_shuffle(conv(input, 27), scale)\n}\n")
    program, result = check_file(tmp_path / "two.space", {"scale": 3}, text=text)
    assert [(n.name, n.scale) for n in result.networks] == [("a", 3), ("b", 3)]
    assert [n.name for n in program.networks] == ["a", "b"]


def test_a_network_may_declare_its_image_input():
    space = loads(
        "network gray(input: 1, C = 8, scale = 2) {\n"
        "    s = conv(input, C, k=3)\n"
        "    return pixel_shuffle(conv(s, scale * scale, k=3), scale)\n"
        "}\n", path="gray.space")
    assert space.network.in_channels == 1 and space.network.out_channels == 1
