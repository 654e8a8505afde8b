"""The neural models: TAM-RL and its LSTM baselines, behind one interface and one registry.

Every model maps daily dynamic inputs ``x`` (batch, days, n_dynamic), the location's static vector ``static``
(batch, n_static) and, for task-aware models, a support-set embedding ``z`` (batch, embedding) to daily
(standardised) GPP, RECO and NEE. The decoder always reads the dynamic inputs with the statics appended.
``embed`` turns support sets into ``z``: a BiLSTM task encoder reads each support window (drivers and statics,
never fluxes), the window codes are pooled by a mean, so the set size K is free, and (optionally) the monthly
climatology of the support record is appended before the last layer: what a 45-day window cannot show.

- ``tamrl``: an MLP generator turns z into FiLM parameters, applied at the decoder input (x' = g1*x + b1) and on
  the decoder's hidden states before the output head (h' = g2*h + b2). Trained in two stages: the decoder
  alone, then everything jointly.
- ``ctlstm``: the same encoder, with z concatenated to every day's decoder input instead of modulating it
  (task conditioning by concatenation); trained jointly.
- ``tamlstm``: the decoder alone, with no task information (TAM-RL's first stage).

``stages`` lists the training stages of each model: ``decoder`` trains the decoder without z, ``joint`` trains
all parameters with z.
"""

import torch
from torch import nn

from tamrl.features import TARGETS

State = tuple[torch.Tensor, torch.Tensor] | None


class Decoder(nn.Module):
    """LSTM decoder with optional FiLM on its input and on its hidden states."""

    def __init__(self, n_in: int, hidden: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(n_in, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, len(TARGETS))

    def forward(
        self, x: torch.Tensor, film: tuple[torch.Tensor, ...] | None = None, state: State = None
    ) -> tuple[torch.Tensor, State]:
        if film is not None:
            g1, b1, g2, b2 = (p.unsqueeze(1) for p in film)
            x = g1 * x + b1
        h, state = self.lstm(x, state)
        if film is not None:
            h = g2 * h + b2
        return self.head(self.dropout(h)), state


class TaskEncoder(nn.Module):
    """BiLSTM over each support window; window codes averaged, then mapped (with the climatology) to z."""

    def __init__(self, n_in: int, hidden: int, embedding: int, n_clim: int = 0):
        super().__init__()
        self.lstm = nn.LSTM(n_in, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden + n_clim, embedding)
        self.n_clim = n_clim

    def forward(self, support: torch.Tensor, mask: torch.Tensor, clim: torch.Tensor | None = None) -> torch.Tensor:
        """``support``: (sets, K, days, features); ``mask``: (sets, K), 1 for real windows, 0 for padding;
        ``clim``: (sets, n_clim), read only by an encoder built with ``n_clim`` > 0."""
        sets, k, days, features = support.shape
        _, (h, _) = self.lstm(support.reshape(sets * k, days, features))
        codes = torch.cat([h[0], h[1]], dim=-1).reshape(sets, k, -1)
        weights = mask.unsqueeze(-1)
        pooled = (codes * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.out(torch.cat([pooled, clim], dim=-1) if self.n_clim else pooled)


class FiLMGenerator(nn.Module):
    """MLP from the task embedding to (g1, b1, g2, b2); starts at the identity modulation."""

    def __init__(self, embedding: int, hidden: int, n_in: int, n_hidden: int):
        super().__init__()
        self.sizes = [n_in, n_in, n_hidden, n_hidden]
        self.mlp = nn.Sequential(nn.Linear(embedding, hidden), nn.ReLU(), nn.Linear(hidden, sum(self.sizes)))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        d_g1, b1, d_g2, b2 = torch.split(self.mlp(z), self.sizes, dim=-1)
        return 1 + d_g1, b1, 1 + d_g2, b2


class TamRL(nn.Module):
    """Task-Aware Modulation with Representation Learning."""

    stages = ("decoder", "joint")

    def __init__(self, n_dynamic: int, n_static: int, hidden: int, embedding: int, dropout: float,
                 n_clim: int = 0, zero_embedding: bool = False):
        super().__init__()
        n_in = n_dynamic + n_static
        self.encoder = TaskEncoder(n_in, hidden // 2, embedding, n_clim)
        self.generator = FiLMGenerator(embedding, hidden, n_in, hidden)
        self.decoder = Decoder(n_in, hidden, dropout)
        self.zero_embedding = zero_embedding

    def embed(self, support: torch.Tensor, mask: torch.Tensor, clim: torch.Tensor | None = None) -> torch.Tensor:
        """z of each support set; the z-off control (``zero_embedding``) gives z = 0 whatever the support."""
        if self.zero_embedding:
            return support.new_zeros(support.shape[0], self.encoder.out.out_features)
        return self.encoder(support, mask, clim)

    def forward(self, x, static, z=None, state: State = None):
        film = None if z is None else self.generator(z)
        return self.decoder(with_statics(x, static), film, state)


class CTLSTM(nn.Module):
    """The task embedding concatenated to every day's decoder input."""

    stages = ("joint",)

    def __init__(self, n_dynamic: int, n_static: int, hidden: int, embedding: int, dropout: float,
                 n_clim: int = 0, zero_embedding: bool = False):
        super().__init__()
        self.encoder = TaskEncoder(n_dynamic + n_static, hidden // 2, embedding, n_clim)
        self.decoder = Decoder(n_dynamic + n_static + embedding, hidden, dropout)

    def embed(self, support: torch.Tensor, mask: torch.Tensor, clim: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(support, mask, clim)

    def forward(self, x, static, z=None, state: State = None):
        return self.decoder(with_statics(x, torch.cat([static, z], dim=-1)), None, state)


class TamLSTM(nn.Module):
    """TAM-RL's decoder alone: dynamic inputs and statics, no task information."""

    stages = ("decoder",)

    def __init__(self, n_dynamic: int, n_static: int, hidden: int, embedding: int, dropout: float,
                 n_clim: int = 0, zero_embedding: bool = False):
        super().__init__()
        self.decoder = Decoder(n_dynamic + n_static, hidden, dropout)

    def embed(self, support: torch.Tensor, mask: torch.Tensor, clim: torch.Tensor | None = None) -> None:
        return None

    def forward(self, x, static, z=None, state: State = None):
        return self.decoder(with_statics(x, static), None, state)


def with_statics(x: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
    """Append the per-location vector to every day's inputs."""
    return torch.cat([x, static.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)


def task_aware(net: nn.Module) -> bool:
    """Whether a model reads support sets (so inference must build them)."""
    return "joint" in net.stages


def modulates(net: nn.Module) -> bool:
    """Whether a trained network's output depends on its support set.

    A TAM-RL member without a joint stage keeps the generator's zero-initialised output layer: its FiLM is the
    identity (g = 1, b = 0 exactly), so inference can skip the encoder for it with bit-identical results.
    """
    if not task_aware(net):
        return False
    if isinstance(net, TamRL):
        if net.zero_embedding:
            return True  # a constant FiLM (z = 0) that is not the identity
        last = net.generator.mlp[-1]
        return bool(last.weight.any() or last.bias.any())
    return True


NEURAL_MODELS: dict[str, type[nn.Module]] = {"tamrl": TamRL, "tamlstm": TamLSTM, "ctlstm": CTLSTM}
