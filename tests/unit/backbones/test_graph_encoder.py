"""GIN / GINE graph encoder: a complete layer map (bond embeddings inside their layer's block), invariance to
atom order and to batching, every strategy freezing exactly its blocks (BatchNorm statistics included), LoRA
on the convolutions' MLPs, and exact save / reload."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Batch, Data

from conftest import quiet_trainer
from headstart import FinetuneModule, LoraSpec, Strategy
from headstart.backbones import check_layer_map
from headstart.backbones.graph import GraphEncoder, build_graph_encoder
from headstart.errors import ConfigError, DataError
from headstart.optim import build_optimizer

ATOMS = (7, 3, 4)  # vocabulary size of each atom feature column
BONDS = (4, 2)
HIDDEN = 16


def random_graph(n_atoms: int, seed: int, label: int | None = None) -> Data:
    """A connected molecule-like graph: a random tree plus one extra bond, both directions of each bond."""
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, size, (n_atoms,), generator=g) for size in ATOMS], dim=1)
    pairs = [(int(torch.randint(0, i, (1,), generator=g)), i) for i in range(1, n_atoms)]
    if n_atoms > 2:
        pairs.append((0, n_atoms - 1))
    bond_attr = torch.stack([torch.randint(0, size, (len(pairs),), generator=g) for size in BONDS], dim=1)
    src = [a for a, b in pairs] + [b for a, b in pairs]
    dst = [b for a, b in pairs] + [a for a, b in pairs]
    edge_index = torch.tensor([src, dst], dtype=torch.long).view(2, -1)
    edge_attr = torch.cat([bond_attr, bond_attr]).view(-1, len(BONDS))
    data = Data(x=x, edge_index=edge_index, edge_attr=edge_attr, num_nodes=n_atoms)
    if label is not None:
        data.y = torch.tensor([label])
    return data


def encoder(seed: int = 0, **kwargs) -> GraphEncoder:
    torch.manual_seed(seed)
    kwargs = {"hidden_size": HIDDEN, "num_layers": 3, **kwargs}
    return GraphEncoder(ATOMS, BONDS, **kwargs)


def batch_of(*sizes: int, seed: int = 0) -> Batch:
    return Batch.from_data_list([random_graph(n, seed + i) for i, n in enumerate(sizes)])


def warm_up(net: GraphEncoder, steps: int = 3) -> None:
    """A few train-mode passes so BatchNorm's running statistics are no longer their defaults."""
    net.train()
    with torch.no_grad():
        for s in range(steps):
            net(batch_of(5, 4, 6, seed=10 * s))
    net.eval()


# ----- layer map -------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv", ["gine", "gin"])
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_layer_map_covers_every_parameter_once(conv: str, norm: str) -> None:
    net = encoder(conv=conv, norm=norm, num_layers=4)
    blocks = net.blocks()
    check_layer_map(net, blocks)
    assert net.block_names() == ["stem", "layers.0", "layers.1", "layers.2", "layers.3"]
    assert len(blocks) == 4 + 1 and net.out_dim == HIDDEN
    stem_ids = {id(p) for p in blocks[0][1].parameters()}
    assert stem_ids == {id(p) for p in net.stem.parameters()}
    for i, (_, block) in enumerate(blocks[1:]):
        bond = net.layers[i].bond_encoder
        if conv == "gine":  # each layer owns its bond embedding (Hu et al., 2020), the stem only atoms
            assert bond is not None and len(bond.embeddings) == len(BONDS)
            assert {id(p) for p in bond.parameters()} <= {id(p) for p in block.parameters()}
        else:
            assert bond is None


def test_gin_ignores_bonds_and_gine_reads_them() -> None:
    graph = random_graph(6, seed=1)
    other = graph.clone()
    other.edge_attr = (graph.edge_attr + 1) % torch.tensor(BONDS)
    for conv, same in (("gin", True), ("gine", False)):
        net = encoder(conv=conv).eval()
        with torch.no_grad():
            assert torch.equal(net(graph), net(other)) is same, conv


# ----- forward ---------------------------------------------------------------------------------------
def test_forward_shape_and_a_single_data_is_one_graph() -> None:
    net = encoder().eval()
    assert net(batch_of(5, 1, 7)).shape == (3, HIDDEN)
    graph = random_graph(5, seed=0)
    with torch.no_grad():
        alone = net(graph)  # a Data without a batch vector
        batched = net(Batch.from_data_list([graph]))
    assert alone.shape == (1, HIDDEN)
    assert torch.equal(alone, batched)


def test_eval_forward_is_deterministic_with_dropout() -> None:
    net = encoder(dropout=0.5)
    warm_up(net)
    graphs = batch_of(5, 6)
    with torch.no_grad():
        assert torch.equal(net(graphs), net(graphs))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(graphs), net(graphs))  # dropout is live in training


@pytest.mark.parametrize("pooling", ["mean", "sum", "max"])
def test_atom_order_does_not_change_the_graph_vector(pooling: str) -> None:
    net = encoder(pooling=pooling)
    warm_up(net)
    graph = random_graph(7, seed=3)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    new_position = torch.empty_like(perm)
    new_position[perm] = torch.arange(7)  # old atom i is now atom new_position[i]
    edge_order = torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(1))
    permuted = Data(x=graph.x[perm], edge_index=new_position[graph.edge_index][:, edge_order],
                    edge_attr=graph.edge_attr[edge_order], num_nodes=7)
    assert not torch.equal(permuted.x, graph.x)
    with torch.no_grad():
        torch.testing.assert_close(net(permuted), net(graph), rtol=1e-5, atol=1e-5)


def test_a_batch_equals_its_graphs_one_by_one() -> None:
    net = encoder()
    warm_up(net)
    graphs = [random_graph(5, seed=7), random_graph(8, seed=8)]
    with torch.no_grad():
        together = net(Batch.from_data_list(graphs))
        alone = torch.cat([net(g) for g in graphs])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(together[0], together[1])  # different molecules, different vectors


def test_a_single_atom_trains_with_batch_norm() -> None:
    """One atom and no bonds (a metal ion, methane without hydrogens): BatchNorm1d would fail in training."""
    net = encoder().train()
    lone = Data(x=torch.zeros(1, len(ATOMS), dtype=torch.long), edge_index=torch.zeros(2, 0, dtype=torch.long),
                edge_attr=torch.zeros(0, len(BONDS), dtype=torch.long), num_nodes=1)
    out = net(Batch.from_data_list([lone]))
    assert out.shape == (1, HIDDEN) and torch.isfinite(out).all()


def test_inputs_that_do_not_fit_are_actionable_errors() -> None:
    net = encoder()
    graph = random_graph(4, seed=0)
    with pytest.raises(DataError, match=r"x as integer category indices \[atoms, 3\].*shape \(4, 2\)"):
        net(Data(x=graph.x[:, :2], edge_index=graph.edge_index, edge_attr=graph.edge_attr))
    with pytest.raises(DataError, match="integer category indices"):
        net(Data(x=graph.x.float(), edge_index=graph.edge_index, edge_attr=graph.edge_attr))
    with pytest.raises(DataError, match=r"conv 'gine' needs edge_attr.*got none.*conv 'gin'"):
        net(Data(x=graph.x, edge_index=graph.edge_index))
    with pytest.raises(DataError, match="torch_geometric Batch or Data"):
        net(torch.zeros(3, 3))
    encoder(conv="gin")(Data(x=graph.x, edge_index=graph.edge_index))  # gin needs no bond features
    with pytest.raises(ConfigError, match=r"conv 'gien' is unknown\. Did you mean.*'gine'"):
        encoder(conv="gien")
    with pytest.raises(ConfigError, match="bond feature column"):
        GraphEncoder(ATOMS, [], hidden_size=HIDDEN)


# ----- records ---------------------------------------------------------------------------------------
def test_architecture_records_every_setting_and_rebuilds_the_module() -> None:
    net = encoder(pooling="sum", norm="layer")
    arch = net.architecture()
    assert arch == {"type": "GraphEncoder", "atom_feature_sizes": list(ATOMS), "bond_feature_sizes": list(BONDS),
                    "conv": "gine", "hidden_size": HIDDEN, "num_layers": 3, "dropout": 0.0, "pooling": "sum",
                    "residual": True, "norm": "layer"}
    assert encoder(pooling="mean", norm="layer").architecture() != arch  # the feature-cache key follows pooling
    described = net.describe()
    assert described["blocks"] == net.block_names() and described["pooling"] == "sum"
    rebuilt = GraphEncoder.from_architecture(arch)
    assert rebuilt.architecture() == arch
    assert rebuilt.state_dict().keys() == net.state_dict().keys()


def test_state_dict_round_trip_gives_identical_outputs(tmp_path) -> None:
    net = encoder(seed=0)
    warm_up(net)  # non-default BatchNorm statistics must travel too
    path = tmp_path / "graph.pt"
    torch.save(net.state_dict(), path)
    fresh = encoder(seed=1).eval()
    graphs = batch_of(4, 7, 3, seed=50)
    with torch.no_grad():
        assert not torch.equal(fresh(graphs), net(graphs))
        fresh.load_state_dict(torch.load(path, weights_only=True))
        assert torch.equal(fresh(graphs), net(graphs))


def test_build_graph_encoder_from_config_on_featurized_molecules() -> None:
    molecules = pytest.importorskip("headstart.data.molecules")
    pytest.importorskip("rdkit")
    from headstart.config import GraphEncoderConfig

    net = build_graph_encoder(GraphEncoderConfig(hidden_size=HIDDEN, num_layers=2, pooling="max")).eval()
    assert net.config["atom_feature_sizes"] == list(molecules.ATOM_FEATURE_SIZES)
    assert net.config["pooling"] == "max" and net.block_names() == ["stem", "layers.0", "layers.1"]
    mols, invalid = molecules.parse_smiles(["CCO", "c1ccccc1O", "[Na+]"])
    assert not invalid
    with torch.no_grad():
        out = net(Batch.from_data_list(molecules.featurize_all(mols)))
    assert out.shape == (3, HIDDEN) and torch.isfinite(out).all()


# ----- strategies ------------------------------------------------------------------------------------
STRATEGIES = {
    "full": Strategy("full"),
    "linear_probe": Strategy("linear_probe"),
    "partial_range": Strategy("partial", freeze="0-1"),
    "partial_last": Strategy("partial", train_last=1),
    "gradual": Strategy("gradual", freeze_epochs=1),
    "lora": Strategy("lora", lora=LoraSpec(r=2, alpha=4, dropout=0.0)),
}


def _block_index(model: FinetuneModule) -> dict[str, int]:
    """State-dict key of every backbone tensor (parameters and buffers) -> index of its block."""
    out: dict[str, int] = {}
    for i, (_, block) in enumerate(model._blocks):
        ids = {id(t) for t in [*block.parameters(), *block.buffers()]}
        for key, value in model.state_dict(keep_vars=True).items():
            if id(value) in ids:
                out[key] = i
    return out


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_one_step_moves_exactly_the_trainable_weights(name: str) -> None:
    strategy = STRATEGIES[name]
    model = FinetuneModule(backbone=encoder(), n_classes=2, strategy=strategy, lr=1e-2, weight_decay=0.0,
                           scheduler_type="none", dropout=0.0)
    n = len(model._blocks)
    trainable = strategy.trainable(0, n)
    groups, schedule = model.build_schedule(total_steps=1, steps_per_epoch=1)
    optimizer = build_optimizer(groups, "adamw")
    schedule.apply(optimizer, 0, model.trainable_blocks)
    model.train()
    assert [block.training for _, block in model._blocks] == [i in trainable for i in range(n)]
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    graphs, labels = batch_of(5, 4, 6, 3), torch.tensor([0, 1, 1, 0])
    model._loss(model(graphs, labels), labels).backward()
    optimizer.step()
    after = model.state_dict()
    where = _block_index(model)
    assert any("running_mean" in k for k in where) and any("bond_encoder" in k for k in where)
    for key, value in after.items():
        moved = not torch.equal(value, before[key])
        if key.startswith("head."):
            assert moved, key
            continue
        block = where.get(key)
        if block is None:  # e.g. the criterion's buffers
            continue
        if "lora_A" in key:
            continue  # lora_A moves only once lora_B is non-zero (B starts at 0)
        is_param = key.replace("backbone.", "", 1) in dict(model.backbone.named_parameters())
        if block not in trainable:  # frozen block: weights and BatchNorm statistics exactly equal
            assert not moved, f"{name}: frozen {key} changed"
        elif not is_param:  # buffers of a block in train mode: BN statistics update (also under LoRA)
            assert moved or "num_batches" in key or key.endswith(".eps"), f"{name}: buffer {key} did not update"
        elif strategy.uses_lora:
            assert moved is ("lora_B" in key), f"lora: {key} {'moved' if moved else 'did not move'}"
        else:
            assert moved, f"{name}: trainable {key} did not move"
    if strategy.uses_lora:  # adapters on both Linear layers of every convolution's MLP
        lora_keys = {k.split(".lora_")[0] for k in after if "lora_B" in k}
        assert lora_keys == {f"backbone.layers.{i}.conv.nn.{j}" for i in range(3) for j in (0, 2)}


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.graphs = [random_graph(3 + i % 5, seed=100 + i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> tuple[Data, int]:
        return self.graphs[i], i % 2


def _collate(items: list[tuple[Data, int]]) -> tuple[Batch, torch.Tensor]:
    return Batch.from_data_list([g for g, _ in items]), torch.tensor([y for _, y in items])


def test_gradual_through_lightning_freezes_then_trains_every_block() -> None:
    """Epoch 0 trains the head only (encoder in eval mode: BN statistics too stay put), epoch 1 everything."""
    import pytorch_lightning as pl

    class Snap(pl.Callback):
        def __init__(self) -> None:
            self.states: list[dict[str, torch.Tensor]] = []

        def on_train_start(self, trainer, pl_module) -> None:
            self.states.append({k: v.clone() for k, v in pl_module.backbone.state_dict().items()})

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.states.append({k: v.clone() for k, v in pl_module.backbone.state_dict().items()})

    model = FinetuneModule(backbone=encoder(), n_classes=2, strategy=Strategy("gradual", freeze_epochs=1), lr=1e-2,
                           weight_decay=0.0, scheduler_type="none", dropout=0.0)
    loader = DataLoader(_Pairs(12), batch_size=6, collate_fn=_collate)
    snap = Snap()
    quiet_trainer(2, [snap], limit_val_batches=0).fit(model, loader)
    start, epoch0, epoch1 = snap.states
    assert all(torch.equal(start[k], epoch0[k]) for k in start)
    moved = [k for k in start if not torch.equal(epoch0[k], epoch1[k])]
    params = dict(model.backbone.named_parameters())
    assert set(params) <= set(moved)
    assert any("running_mean" in k for k in moved)
