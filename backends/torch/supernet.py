"""The supernet: choice sites as mixed ops over softmax(α), pick sites over softmax(β).

α and β are `nn.Parameter`s of the network itself, in two `ParameterDict`s
(`alphas`, `betas`) keyed by site (dots written as `/`), so they are saved in
`state_dict`, moved by `.to()` and seen by DDP, yet kept apart from the weights
by `arch_parameters()` and `weight_parameters()`.

A width site (`C = choice [18, 24, 36, 48]`) is an α site without a choice node: the
supernet is the widest network, and the output of every layer with weights whose
channels change with the width is multiplied by Σ_w p_w · mask_w, mask_w keeping the
channels that layer has at width w (FBNetV2-style channel masking, one set of weights).

Modes: `darts` weighs every candidate by softmax(α); `gdas` samples one
candidate with Gumbel-softmax at temperature `tau` (straight-through when
`hard`, a soft relaxation otherwise) and runs only the sampled one when hard.

Picks (`pick k of [...]`): under `darts` each candidate is scaled by softmax(β)
(times k when summed, so a k-hot β passes the chosen values on at full size); under
`gdas` k candidates are sampled by Gumbel top-k: with `hard` the chosen get weight 1
and the rest 0 in the forward pass, with the gradient of k·softmax((β + g)/τ)
(straight-through); without `hard`, k·softmax((β + g)/τ) itself.

A concatenating pick feeds a 1×1-or-wider conv over every candidate's channels. The
derived network's conv reads only the chosen candidates, so `fixed_state_dict` slices
its weight to their channels and folds in the factor each got in the supernet
(softmax(β) under `darts`): the derived network with those weights computes what the
supernet computes with the unchosen candidates left out. Under `darts` that conv can
absorb any per-candidate scale of β, so only β's ranking is meaningful, not its size.

Partial channels (PC-DARTS), ``partial_channels`` K > 1: at every choice site instance
only the first C/K channels of the input go through the mixed op, whose candidates are
built for C/K channels (`spacelang.checker.partial_network` elaborates them again for
the slice, so any candidate whose width follows its input's qualifies); the other
channels bypass it unchanged and are concatenated after its output, then the channels
are shuffled in K groups (`channel_shuffle`), so that the next site's slice holds
channels of every group. PC-DARTS' edge normalisation (β weights on the edges into a
node, against the noise of sampling channels) is what our pick sites' β already are:
under `darts` every pick candidate is scaled by softmax(β), so nothing is added. The
derived network is the full-width one and is retrained: a partial site's candidates
have 1/K of its weights, so `fixed_state_dict` leaves them out (`inherit_into` keeps
the fixed network's initial values there) and the supernet's other layers learned
around the shuffle, so weights inherited from a partial search are a start, not a
result.

Pruning (progressive shrinking): `prune` drops, at every site, the live candidate of
least softmax(α) (choice sites) or softmax(β) (pick sites), sparing the candidates of the
architecture the search derives at that moment (``protect``), so a budget-aware
derivation is never pruned away. A dropped candidate is masked (the `alive` buffers,
saved in `state_dict` when built with ``pruning``, so a resumed search keeps them): its
logit is −∞ in every softmax and Gumbel sample (probability exactly 0, zero gradient to
its α/β); a choice site's mixed op no longer runs it (its weights get no gradient), a
pick passes it on scaled by 0; argmax, the derivation and the expected cost see it
through `probabilities`. Nothing brings it back. A pick's candidates are values the
network computes anyway, so pruning one saves no time: it fixes the wiring, which
otherwise flips while β is near uniform. Once every choice site has one live candidate
and every pick site k, the architecture is `decided`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from spacelang.backends.torch.graph import GraphModule, register
from torch import nn

from spacelang.ir import Network, Node, live_nodes, module_path
from spacelang.naming import module_name
from spacelang.primitives import PRIMITIVES

MODES = ("darts", "gdas")


_RESERVED = frozenset(dir(nn.ParameterDict()))


def param_key(site: str) -> str:
    """A site's key in `alphas`/`betas`: dots written as `/`.

    `nn.ParameterDict` stores entries as attributes, so a key it already has as
    one (a site at a value named `eval`, `half`, `keys`...) gets a trailing `/`;
    no site key ends in a dot, so this cannot clash with another site.
    """
    key = site.replace(".", "/")
    return f"{key}/" if key in _RESERVED else key


class WidthMask:
    """The channel mask of one layer under a width site: Σ_w p_w · [channel < c_w]."""

    def __init__(self, owner: SuperNet, site: str, channels: tuple[int, ...]):
        self.owner = [owner]
        self.site = site
        self.channels = torch.tensor(channels)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        weights = self.owner[0].site_weights(self.site).to(y.dtype)
        positions = torch.arange(y.shape[1], device=y.device)
        keep = (positions[None, :] < self.channels.to(y.device)[:, None]).to(y.dtype)
        return y * (weights @ keep).view(1, -1, *([1] * (y.dim() - 2)))


def width_channels(network: Network) -> dict[int, tuple[int, ...]]:
    """Per layer with weights (by `id` of its node in `network.graph`) whose channels
    change with the width site: its channels at each width value."""
    if network.width_site is None:
        return {}
    walks = [list(variant.graph.walk()) for variant in network.variants]
    out = {}
    for index, node in enumerate(network.graph.walk()):
        if node.op in PRIMITIVES and PRIMITIVES[node.op].module:
            channels = tuple(walk[index].channels for walk in walks)
            if len(set(channels)) > 1:
                out[id(node)] = channels
    return out


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``x`` (N, C, ...) in ``groups`` groups of C/groups:
    input channel g·C/groups + j becomes output channel j·groups + g."""
    n, c = x.shape[:2]
    return x.reshape(n, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


class MixedOp(nn.Module):
    """One choice site instance: candidates weighted by the site's architecture weights;
    with partial channels, over the first 1/K of the input's channels (`SuperNet`)."""

    def __init__(self, node: Node, owner: SuperNet):
        super().__init__()
        self.site = node.site
        self.owner = [owner]  # a list, so the owner is not registered as a child
        self.partial = owner.partial_channels > 1
        graphs = node.partial if self.partial else node.candidates
        # straight into `_modules`, so a candidate may be named `half` or `train`
        self.candidates = nn.ModuleDict()
        for label, graph in zip(node.labels, graphs, strict=True):
            # a candidate cell with choices of its own holds their mixed ops
            self.candidates._modules[module_name(label)] = GraphModule(graph, owner._special,
                                                                       owner._mask)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.partial:
            return self._mix(*inputs)
        (x,) = inputs
        groups = self.owner[0].partial_channels
        width = x.shape[1] // groups
        mixed = self._mix(x[:, :width])
        return channel_shuffle(torch.cat([mixed, x[:, width:]], dim=1), groups)

    def _mix(self, *inputs: torch.Tensor) -> torch.Tensor:
        owner = self.owner[0]
        weights = owner.site_weights(self.site)
        modules = list(self.candidates.values())
        if owner.mode == "gdas" and owner.hard:
            index = int(weights.argmax())
            return weights[index] * modules[index](*inputs)
        return sum(weights[i] * modules[i](*inputs) for i in owner.live_candidates(self.site))


class PickOp(nn.Module):
    """One pick site: candidates scaled by their weights, concatenated or summed."""

    def __init__(self, node: Node, owner: SuperNet):
        super().__init__()
        self.site = node.site
        self.k = node.k
        self.aggregate = node.aggregate
        self.owner = [owner]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        weights = self.owner[0].site_weights(self.site, pick=True)
        if self.aggregate == "concat":
            return torch.cat([w * x for w, x in zip(weights, inputs, strict=True)], dim=1)
        return sum(w * x for w, x in zip(weights, inputs, strict=True))


class SuperNet(nn.Module):
    """A search space as one module with architecture parameters."""

    def __init__(self, network: Network, *, mode: str = "darts", tau: float = 1.0,
                 hard: bool = True, init_scale: float = 1e-3, partial_channels: int = 1,
                 pruning: bool = False):
        """``partial_channels`` K > 1 needs ``network`` elaborated for it
        (`spacelang.checker.partial_network`: `Space.supernet` does that); ``pruning``
        saves the pruning masks in `state_dict` (a search that prunes)."""
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if partial_channels < 1:
            raise ValueError(f"partial_channels must be at least 1, got {partial_channels}")
        if partial_channels > 1 and any(n.op == "choice" and not n.partial
                                        for n in network.graph.walk()):
            raise ValueError("partial channels need the network elaborated for them "
                             "(Space.supernet(partial_channels=K) does that)")
        self.network = network
        self.mode = mode
        self.tau = tau
        self.hard = hard
        self.partial_channels = partial_channels
        self.rgb_range = network.rgb_range
        self.scale = network.scale
        self.alphas = nn.ParameterDict({
            param_key(s.key): nn.Parameter(init_scale * torch.randn(len(s.labels)))
            for s in network.choice_sites})
        self.betas = nn.ParameterDict({
            param_key(s.key): nn.Parameter(init_scale * torch.randn(len(s.candidates)))
            for s in network.pick_sites})
        # per site, which candidates are still in the race (`prune`)
        self.alive = nn.Module()
        for key, count in self._site_sizes().items():
            self.alive.register_buffer(param_key(key), torch.ones(count, dtype=torch.bool),
                                       persistent=pruning)
        self._live: dict[str, tuple[int, ...]] | None = None  # read from `alive` when None
        self.register_load_state_dict_post_hook(_forget_live)
        self._sampled: dict[str, torch.Tensor] = {}
        self._widths = width_channels(network)
        self._picks = {s.key: s for s in network.pick_sites}
        self.body = GraphModule(network.graph, special=self._special, mask=self._mask)

    def _mask(self, node: Node) -> WidthMask | None:
        channels = self._widths.get(id(node))
        if channels is None:
            return None
        return WidthMask(self, self.network.width_site.key, channels)

    def _special(self, graph_module: nn.Module, node: Node):
        module = MixedOp(node, self) if node.op == "choice" else PickOp(node, self)
        register(graph_module, module_path(node), module)
        return module

    def _site_sizes(self) -> dict[str, int]:
        """Every site's key and number of candidates, choice sites first."""
        sizes = {s.key: len(s.labels) for s in self.network.choice_sites}
        sizes.update({s.key: len(s.candidates) for s in self.network.pick_sites})
        return sizes

    # -- architecture weights
    def logits(self, site: str) -> torch.Tensor:
        """``site``'s α (choice) or β (pick) with its pruned candidates at −∞."""
        key = param_key(site)
        raw = self.betas[key] if site in self._picks else self.alphas[key]
        return raw.masked_fill(~self.alive._buffers[key], float("-inf"))

    def live_candidates(self, site: str) -> tuple[int, ...]:
        """The indices of choice ``site``'s candidates that are not pruned.

        Read from the `alive` masks once (one device sync) and kept until `prune` or
        `load_state_dict` changes them: change the masks only through those.
        """
        if self._live is None:
            keys = [param_key(s.key) for s in self.network.choice_sites]
            masks = [self.alive._buffers[key] for key in keys]
            flags = torch.cat(masks).tolist() if masks else []
            self._live, start = {}, 0
            for site_, mask in zip(self.network.choice_sites, masks, strict=True):
                chosen = flags[start:start + len(mask)]
                self._live[site_.key] = tuple(i for i, on in enumerate(chosen) if on)
                start += len(mask)
        return self._live[site]

    @torch.no_grad()
    def prune(self, keep: int = 1, protect: Mapping[str, Any] | None = None
              ) -> dict[str, str]:
        """At each choice site with more than ``keep`` live candidates (pick site: more
        than its k + ``keep`` − 1), drop the live one of least softmax(α/β), the first of
        equals, never one that ``protect`` (decisions as `decisions` gives them) chooses.
        Returns site key → dropped label."""
        dropped = {}
        for site in [*self.network.choice_sites, *self.network.pick_sites]:
            pick = site.key in self._picks
            mask = self.alive._buffers[param_key(site.key)]
            if int(mask.sum()) <= keep + (site.k - 1 if pick else 0):
                continue
            spared = mask.clone()
            if protect is not None and site.key in protect:
                chosen = protect[site.key]
                spared[list(chosen) if pick else [chosen]] = False
            if not bool(spared.any()):
                continue
            index = int(self.logits(site.key).masked_fill(~spared, float("inf")).argmin())
            mask[index] = False
            dropped[site.key] = (site.candidates if pick else site.labels)[index]
        self._live = None
        return dropped

    def decided(self) -> bool:
        """Whether pruning has left one architecture: one live candidate per choice site,
        k per pick site."""
        counts = torch.stack([m.sum() for m in self.alive._buffers.values()]).tolist() \
            if self.alive._buffers else []
        wanted = [1] * len(self.network.choice_sites) + [s.k for s in self.network.pick_sites]
        return counts == wanted

    def site_weights(self, site: str, pick: bool = False) -> torch.Tensor:
        """The weights a site's candidates get in this forward pass."""
        logits = self.logits(site)
        if self.mode == "darts":
            return self.pick_scales(site) if pick else F.softmax(logits, dim=-1)
        if site not in self._sampled:
            if pick:
                self._sampled[site] = self._gumbel_top_k(logits, self._picks[site].k)
            else:
                self._sampled[site] = F.gumbel_softmax(logits, tau=self.tau, hard=self.hard)
        return self._sampled[site]

    def _gumbel_top_k(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        """k candidates sampled without replacement (Gumbel top-k), as weights."""
        gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-20, 1.0)))
        perturbed = (logits + gumbel) / self.tau
        soft = k * F.softmax(perturbed, dim=-1)
        if not self.hard:
            return soft
        chosen = torch.zeros_like(logits).scatter(0, torch.topk(perturbed, k).indices, 1.0)
        return chosen - soft.detach() + soft

    def pick_scales(self, site: str) -> torch.Tensor:
        """The factor each candidate of pick ``site`` gets in a noise-free forward pass:
        softmax(β) (times k when summed) under `darts`; under `gdas` 1 for the top k
        (hard) or k·softmax(β/τ)."""
        pick = self._picks[site]
        beta = self.logits(site)
        if self.mode == "gdas":
            if self.hard:
                return torch.zeros_like(beta).scatter(0, torch.topk(beta, pick.k).indices, 1.0)
            return pick.k * F.softmax(beta / self.tau, dim=-1)
        factor = 1 if pick.aggregate == "concat" else pick.k
        return factor * F.softmax(beta, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._sampled = {}  # GDAS: one sample per site per forward, shared by its instances
        return self.body(x)

    def get_submodule(self, target: str) -> nn.Module:
        from spacelang.backends.torch.graph import get_submodule

        return get_submodule(self, target)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.alphas.values(), *self.betas.values()]

    def named_arch_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for key, p in self.alphas.items():
            yield f"alphas.{key}", p
        for key, p in self.betas.items():
            yield f"betas.{key}", p

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> dict[str, torch.Tensor]:
        """softmax(α) per choice site and softmax(β) per pick site, by site key (0 for
        pruned candidates)."""
        return {key: F.softmax(self.logits(key), -1) for key in self._site_sizes()}

    def decisions(self) -> dict[str, Any]:
        """The current architecture: argmax α per choice site, top-k β per pick site
        (among live candidates)."""
        out: dict[str, Any] = {}
        for site in self.network.choice_sites:
            out[site.key] = int(self.logits(site.key).argmax())
        for site in self.network.pick_sites:
            top = torch.topk(self.logits(site.key), site.k).indices
            out[site.key] = tuple(sorted(int(i) for i in top))
        return out

    def fixed_state_dict(self, decisions: Mapping[str, Any] | None = None
                         ) -> dict[str, torch.Tensor]:
        """The weights of the network ``decisions`` derive (default: the current argmax).

        Keyed as that fixed network's `state_dict`: each choice site contributes only its
        chosen candidate, whose weights take the mixed op's place (none with partial
        channels: its candidates are built for 1/K of the width); what no chosen input
        of a pick reaches is left out, and so are α/β.
        """
        decisions = self.decisions() if decisions is None else decisions
        out: dict[str, torch.Tensor] = {}

        def collect(module: nn.Module, prefix: str) -> None:
            if isinstance(module, MixedOp):
                if module.partial:
                    return
                chosen = list(module.candidates.values())[int(decisions[module.site])]
                collect(chosen, prefix)
                return
            for name, param in module._parameters.items():
                if param is not None:
                    out[prefix + name] = param.detach()
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent_buffers_set:
                    out[prefix + name] = buffer.detach()
            for name, child in module._modules.items():
                if child is not None:
                    collect(child, f"{prefix}{name}.")

        collect(self.body, "")
        self._slice_pick_fusions(out, decisions)
        graph = self.network.graph
        alive = live_nodes(graph, decisions)
        dead = tuple(f"{module_path(n)}." for n in graph.nodes
                     if not alive[n.id] and n.op not in ("input", "pick"))
        return {k: v for k, v in out.items() if not k.startswith(dead)}

    def _slice_pick_fusions(self, weights: dict[str, torch.Tensor],
                            decisions: Mapping[str, Any]) -> None:
        """Cut each conv after a concatenating pick down to the chosen candidates' input
        channels, each scaled by the factor it gets in the supernet (`pick_scales`)."""
        graph = self.network.graph
        for node in graph.nodes:
            if node.op != "conv" or not node.inputs:
                continue
            source = graph.nodes[node.inputs[0]]
            key = f"{module_path(node)}.weight"
            if (source.op != "pick" or source.aggregate != "concat" or key not in weights
                    or source.site not in decisions or node.args.get("groups", 1) != 1):
                continue
            width = graph.nodes[source.inputs[0]].channels
            scales = self.pick_scales(source.site).detach()
            blocks = [weights[key][:, i * width:(i + 1) * width] * scales[i]
                      for i in decisions[source.site]]
            weights[key] = torch.cat(blocks, dim=1)

    def inherit_into(self, fixed: nn.Module, decisions: Mapping[str, Any] | None = None
                     ) -> list[str]:
        """Copy this supernet's weights into ``fixed``, the network ``decisions`` derive.

        The conv after a concatenating pick gets its weight sliced to the chosen inputs
        (`fixed_state_dict`). A weight with no source of its shape keeps its initial
        value; those keys are returned.
        """
        source = self.fixed_state_dict(decisions)
        kept = []
        with torch.no_grad():
            for key, value in fixed.state_dict().items():
                if key in source and source[key].shape == value.shape:
                    value.copy_(source[key])
                else:
                    kept.append(key)
        return kept

    def arch_state(self) -> dict[str, list[float]]:
        """α and β as plain lists, by site key (for logs and derived headers)."""
        out = {s.key: self.alphas[param_key(s.key)].detach().cpu().tolist()
               for s in self.network.choice_sites}
        out.update({s.key: self.betas[param_key(s.key)].detach().cpu().tolist()
                    for s in self.network.pick_sites})
        return out


def _forget_live(net: SuperNet, incompatible_keys: Any) -> None:
    """After `load_state_dict`: the masks may have changed."""
    net._live = None


def build_supernet(network: Network, *, mode: str = "darts", tau: float = 1.0,
                   hard: bool = True, partial_channels: int = 1,
                   pruning: bool = False) -> SuperNet:
    return SuperNet(network, mode=mode, tau=tau, hard=hard,
                    partial_channels=partial_channels, pruning=pruning)
