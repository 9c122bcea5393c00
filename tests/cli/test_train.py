"""``ctresample train``: one sub-command per target, the shared options."""


def test_cli_lists_targets():
    from ctresample.cli import build_parser

    p = build_parser()
    args = p.parse_args(["train", "autoencoder", "--config", "x.yaml", "--max-steps", "3", "--set", "lr=0.1"])
    assert args.target == "autoencoder" and args.max_steps == 3 and args.set == ["lr=0.1"]
    args = p.parse_args(["train", "diffusion", "--resume"])
    assert args.resume
