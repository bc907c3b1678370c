"""The recipe flags come from TrainConfig's fields: every setting has one, and each lands in the config."""
import dataclasses

from higgs_lora.cli import build_parser
from higgs_lora.commands.args import train_config
from higgs_lora.config import ModelConfig, TrainConfig

# A value other than both presets' for every setting, as it is typed on the command line.
GIVEN = dict(epochs=("7", 7), batch_size=("1000", 1000), lr=("0.02", 0.02), optimizer=("adamw", "adamw"),
             weight_decay=("0.03", 0.03), schedule=("cosine", "cosine"), warmup_frac=("0.2", 0.2),
             val_fraction=("0.3", 0.3), patience=("4", 4), label_smoothing=("0.1", 0.1), ft_epochs=("5", 5),
             ft_lr=("0.04", 0.04), ft_val_fraction=("0.2", 0.2), ft_patience=("5", 5), ft_batch_size=("512", 512),
             rank=("6", 6), scale=("0.7", 0.7), targets=(["hidden", "output"], ("hidden", "output")),
             rslora=(None, True), dora=(None, True), lora_init=("pissa", "pissa"), loraplus_lr_ratio=("4", 4.0),
             seed=("9", 9), device=("cpu", "cpu"), precision=("bf16", "bf16"), compile=(None, True),
             class_balance=("equal", "equal"), negative_weights=("zero", "zero"))


def test_every_recipe_setting_is_a_flag_and_lands_in_the_config():
    fields = [f.name for f in TrainConfig.recipe_fields()]
    assert sorted(fields) == sorted(GIVEN)  # a new setting needs a line here, and gets its flag for free
    argv = ["run", "--preset", "notebook"]
    for name in fields:
        value = GIVEN[name][0]
        argv += [f"--{name.replace('_', '-')}", *([] if value is None else [value] if isinstance(value, str) else value)]
    argv += ["--width", "32", "--blocks", "3", "--head-width", "16"]
    parser, _ = build_parser()
    cfg = train_config(parser.parse_args(argv))
    for name in fields:
        assert getattr(cfg, name) == GIVEN[name][1], name
    assert cfg.model == ModelConfig(width=32, n_blocks=3, head_width=16)
    assert cfg.preset == "notebook"


def test_flags_not_given_keep_the_preset():
    parser, _ = build_parser()
    for preset in ("notebook", "default"):
        cfg = train_config(parser.parse_args(["run", "--preset", preset]))
        from higgs_lora.config import preset as make
        assert cfg == make(preset)


def test_single_phase_commands_take_only_their_settings():
    parser, _ = build_parser()
    options = {name: {a for action in sub._actions for a in action.option_strings}
               for name, sub in parser._subparsers._group_actions[0].choices.items()}
    assert "--ft-lr" not in options["train"] and "--epochs" in options["train"] and "--width" in options["train"]
    assert "--epochs" not in options["finetune"] and "--width" not in options["finetune"]
    assert "--rank" in options["finetune"] and "--batch-size" in options["finetune"]
    assert {f"--{f.metadata['flag']}" for f in dataclasses.fields(ModelConfig) if "flag" in f.metadata} <= options["run"]
