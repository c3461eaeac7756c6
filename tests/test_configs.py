"""Configs: every experiment composes and instantiates; the paper's protocols; typos fail at start-up."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from rmseg.config import CONFIG_DIR, compose_config, experiment_names
from rmseg.losses import ResidualMomentLoss, SegmentationLoss
from rmseg.models import MODEL_DIMS, build_model
from rmseg.config.checks import check_config, check_rm_orders
from rmseg.engine.loop import build_loss

TABLE1 = {"unet", "mse", "rm10", "rm10_01", "rm20", "rm20_02", "rm20_02_22"}
TABLE2_PAPER = {"vnet", "rm3", "rm4"}


PROTOCOLS = sorted(p.stem for p in (CONFIG_DIR / "protocol").glob("*.yaml"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("experiment", experiment_names())
def test_every_experiment_composes_and_instantiates(experiment, protocol):
    cfg = compose_config([f"experiment={experiment}", f"protocol={protocol}"])
    assert cfg.name == experiment and cfg.protocol.name == protocol
    resolved = check_config(cfg)
    model = build_model(cfg.model, cfg.data)
    assert MODEL_DIMS[cfg.model.name] == cfg.data.spatial_dims
    assert sum(p.numel() for p in model.parameters()) > 0
    loss = build_loss(cfg.loss)
    for term in getattr(loss, "terms", []):
        if isinstance(term, ResidualMomentLoss):
            assert all(len(order) == cfg.data.spatial_dims for order in term.orders)
    family = experiment.split("/")[0]
    if family in ("table1", "table2"):
        assert resolved["data"]["name"] == {"table1": "gs", "table2": "la"}[family]


def test_protocols_set_what_they_promise():
    assert PROTOCOLS == ["cpu", "demo", "paper", "small"]
    for row in experiment_names("table2"):  # the cpu protocol: every Table 2 row on the V-Net's budget, 2x coarser
        cfg = compose_config([f"experiment={row}", "protocol=cpu"])
        assert (list(cfg.data.downsample), list(cfg.data.patch_size)) == ([2, 2, 2], [64, 64, 48])
        assert (cfg.trainer.max_iters, cfg.optim.lr, cfg.optim.lr_step_iters, cfg.data.batch_size) == (3000, 1e-2, 1250, 4)
        assert cfg.paths.runs_dir.endswith("runs/cpu") and cfg.model.base_filters == 16
    gs = compose_config(["experiment=table1/rm20", "protocol=cpu"])
    assert (list(gs.data.downsample), list(gs.data.image_size), list(gs.model.channels)) == ([2, 2], [512, 512],
                                                                                          [64, 128, 256, 512, 1024])
    assert (gs.optim.lr, gs.trainer.max_iters, gs.trainer.amp, gs.trainer.channels_last) == (1e-3, 2000, True, True)
    paper = compose_config(["experiment=table2/boundary"])  # the paper's protocol keeps each row's own budget
    assert (paper.trainer.max_iters, paper.optim.lr, paper.data.downsample) == (20000, 1e-3, None)
    demo = compose_config(["experiment=table1/unet", "protocol=demo", "data=gs_synthetic"])
    assert (demo.trainer.device, demo.trainer.max_iters, list(demo.data.image_size)) == ("cpu", 200, [64, 64])


def test_table2_base_objective_is_ma_et_al():
    for row in ("vnet", "rm3", "rm4"):
        loss = build_loss(compose_config([f"experiment=table2/{row}"]).loss)
        assert (loss.lambda_ce, loss.lambda_dice) == (0.5, 0.5)
        assert loss.dice.squared_pred and loss.dice.batch and not loss.dice.include_background
    small = build_loss(compose_config(["experiment=table2/vnet", "protocol=small"]).loss)
    assert (small.lambda_ce, small.lambda_dice, small.dice.squared_pred) == (1.0, 1.0, False)


def test_every_paper_row_has_its_experiment():
    assert set(experiment_names("table1")) == {f"table1/{r}" for r in TABLE1}
    assert {f"table2/{r}" for r in TABLE2_PAPER} <= set(experiment_names("table2"))
    with pytest.raises(ValueError, match="experiment family 'table9'"):
        experiment_names("table9")


@pytest.mark.parametrize(
    "row, orders",
    [("unet", None), ("mse", [(0, 0)]), ("rm10", [(1, 0)]), ("rm10_01", [(1, 0), (0, 1)]), ("rm20", [(2, 0)]),
     ("rm20_02", [(2, 0), (0, 2)]), ("rm20_02_22", [(2, 0), (0, 2), (2, 2)])],
)
def test_table1_rows_follow_the_paper(row, orders):
    cfg = compose_config([f"experiment=table1/{row}"])
    loss = build_loss(cfg.loss)
    assert isinstance(loss, SegmentationLoss) and (loss.lambda_ce, loss.lambda_dice) == (1.0, 1.0)
    rm = [t for t in loss.terms if isinstance(t, ResidualMomentLoss)]
    if orders is None:
        assert not rm
    else:
        assert [tuple(o) for o in rm[0].orders] == orders and loss.alpha == 1.0
    assert (cfg.model.name, cfg.optim.name, cfg.optim.lr, cfg.optim.lr_step_iters) == ("unet2d", "sgd", 1e-3, None)
    assert cfg.trainer.max_iters == 2000 and list(cfg.data.image_size) == [512, 512]


@pytest.mark.parametrize("row, orders", [("vnet", None), ("rm3", [(2, 0, 0), (0, 2, 0), (0, 0, 2)]),
                                         ("rm4", [(2, 0, 0), (0, 2, 0), (0, 0, 2), (2, 2, 2)])])
def test_table2_rows_follow_the_comparison_protocol(row, orders):
    cfg = compose_config([f"experiment=table2/{row}"])
    loss = build_loss(cfg.loss)
    rm = [t for t in loss.terms if isinstance(t, ResidualMomentLoss)]
    assert ([tuple(o) for o in rm[0].orders] if rm else None) == orders
    if orders:
        assert loss.alpha == 0.01
    o = cfg.optim
    assert (o.lr, o.momentum, o.weight_decay, o.lr_step_iters, o.lr_gamma) == (1e-2, 0.9, 1e-4, 2500, 0.1)
    assert cfg.trainer.max_iters == 6000 and cfg.data.batch_size == 4
    assert list(cfg.data.patch_size) == [112, 112, 80] and cfg.data.num_train == 16
    assert (cfg.model.name, cfg.model.base_filters, cfg.model.dropout) == ("vnet3d", 16, 0.5)


def test_command_line_overrides_reach_the_config():
    cfg = compose_config(["experiment=table1/rm20", "loss.alpha=0.5", "trainer.max_iters=500", "seed=3"])
    assert (cfg.loss.alpha, cfg.trainer.max_iters, cfg.seed) == (0.5, 500, 3)
    assert compose_config(["experiment=table2/vnet", "model=monai_vnet"]).model.name == "monai_vnet"


@pytest.mark.parametrize(
    "override, key",
    [("trainer.max_iter=5", "max_iter"), ("optim.learning_rate=0.1", "learning_rate"), ("seeed=1", "seeed"),
     ("model.chanels=[4,8]", "chanels"), ("data.batchsize=2", "batchsize"), ("eval.stride=[1,1]", "stride")],
)
def test_misspelt_keys_fail_at_composition_naming_the_key(override, key):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["experiment=table1/rm20", override])
    assert key in str(err.value) + str(err.value.__cause__)


@pytest.mark.parametrize("override, key", [("trainer.max_iters=ten", "max_iters"), ("on_exists=maybe", "on_exists"),
                                           ("trainer.amp=sometimes", "amp")])
def test_wrong_types_fail_at_composition_naming_the_key(override, key):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_config(["experiment=table1/rm20", override])
    assert key in str(err.value) + str(err.value.__cause__)


def test_unknown_experiment_fails_naming_it():
    with pytest.raises(MissingConfigException, match="table1/rm99"):
        compose_config(["experiment=table1/rm99"])


def test_no_experiment_fails_with_the_fix():
    with pytest.raises(ValueError, match="no experiment chosen: pass experiment=table1/<row>"):
        check_config(compose_config([]))


def test_rm_order_of_the_wrong_length_fails_at_start_up():
    cfg = compose_config(["experiment=table2/rm3", "loss.terms=[{_target_: rmseg.losses.ResidualMomentLoss, orders: [[2, 0]]}]"])
    with pytest.raises(ValueError, match=r"loss.terms\[0\].orders has \[2, 0\] with 2 entries but data 'la' is 3D"):
        check_config(cfg)
    check_rm_orders({"terms": [{"orders": [[2, 0, 0]]}]}, 3, "la")  # the right length passes
    with pytest.raises(ValueError, match=r"e.g. \[2, 0\]"):
        check_rm_orders({"terms": [{"orders": [[2, 0], [1, 1, 1]]}]}, 2, "gs")


@pytest.mark.parametrize(
    "override, match",
    [("trainer.max_iters=-5", "trainer.max_iters=-5 must be an integer >= 1"),
     ("trainer.checkpoint_every=0", "trainer.checkpoint_every=0"),
     ("optim.lr=0", "optim.lr=0"), ("optim.momentum=-0.1", "optim.momentum=-0.1"),
     ("trainer.device=tpu", "trainer.device='tpu'"), ("data.batch_size=0", "data.batch_size=0"),
     ("eval.strides=[200,18,4]", "eval.strides"), ("optim.lr=inf", "optim.lr=inf must be a finite number"),
     ("+trainer.max_iter=10", r"unknown config key\(s\) \['trainer.max_iter'\]"),
     ("+seeds=3", r"unknown config key\(s\) \['seeds'\].*the root takes"),
     ("+model.width=3", r"\['model.width'\]"), ("data.downsample=[2,2]", r"data.downsample=\[2, 2\] must be 3")],
)
def test_bad_values_fail_at_start_up_naming_them(override, match):
    with pytest.raises(ValueError, match=match):
        check_config(compose_config(["experiment=table2/rm3", override]))


def test_bad_loss_argument_names_it():
    cfg = compose_config(["experiment=table1/rm20", "loss.alpha=-1"])
    with pytest.raises(ValueError, match="alpha=-1"):
        build_loss(cfg.loss)


def test_slurm_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the cluster extra")
    cfg = compose_config(["experiment=table2/rm4", "launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == 1 and launcher.timeout_min == 720
    assert cfg.name == "table2/rm4"


def test_schemas_are_no_group_options():
    """``--help`` and tab completion list a group's options through the config loader: no schema among them,
    and a schema cannot be picked as an option."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rmseg.config.schema import register

    register()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for group in ("data", "model", "eval", "loss", "experiment/table1"):
            options = loader.get_group_options(group)
            assert options and not [o for o in options if "schema" in o], (group, options)
        assert "table1_base" not in loader.get_group_options("experiment/table1")
    with pytest.raises(MissingConfigException, match="gs_schema"):
        compose_config(["experiment=table1/rm20", "data=gs_schema"])
    # that the schemas still check every key: test_misspelt_keys_fail_at_composition_naming_the_key


def test_table_rows_share_their_base():
    """Every Table 1 / Table 2 row gets data, model, optimizer and trainer from its table's base; the data
    config holds the batch the rows use."""
    for row in experiment_names("table1"):
        cfg = compose_config([f"experiment={row}"])
        assert (cfg.data.name, cfg.model.name, cfg.optim.lr, cfg.data.batch_size) == ("gs", "unet2d", 1e-3, 4)
    for row in experiment_names("table2"):
        cfg = compose_config([f"experiment={row}"])
        assert (cfg.data.name, cfg.model.name, cfg.data.batch_size) == ("la", "vnet3d", 4)
