"""Run orchestration, above the heads: which store fills each role (`roles`), `pipe train`
(`train`), run folders (`rundir`), fine-tuning through a backbone (`finetune`, `images`)
and `pipe tune` (`tune`)."""
