"""A ``transformers`` model as a tbench model source: built from its config with random weights
(or a local checkpoint's), tbench's attention patterns and kernels registered into its
AttentionInterface, its own KV cache for serving, its FLOPs counted on the meta device.

    config     the suite's ``model.hf`` mapping -> checked config fields (offline, never a download)
    structure  the model's layers, found on the meta device
    attention  tbench's strategies as transformers attention implementations
    model      ``HfModelConfig`` (the source: shape, build, FLOPs, what each axis can run) and the
               built model in tbench's calling convention
    serving    prefill, a cached decode step and greedy generation with the model's own cache
    counting   FLOPs by FlopCounterMode on a meta pass, the attention core from allowed pairs
"""
