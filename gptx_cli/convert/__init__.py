"""`gptx convert`: Hugging Face <-> gptx checkpoints (streaming) and configs (HF / legacy / trainer).

- `convert.weights_convert.convert_checkpoint`: tensor-by-tensor conversion through `gptx_cli.model.hf`'s
  adapters, with muP folded into the weights on export (`convert.mup`).
- `convert.info.checkpoint_info`: what a checkpoint holds, from headers only.
- `convert.config.convert_config`: config.json <-> ModelZoo `model` section; legacy <-> trainer layout.
"""
