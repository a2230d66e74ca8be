"""Vision-language models (the paper's EvoVLM-JP): a vision tower and a projector in front of a family's
language model.

The language model of a VLM checkpoint is read as the text model it is (jaxmerge.vlm.view renames its tensors
and hands its text_config to the family records), so every merge method, evolve mode and the mesh treat it like
any text model; the vision tower and projector are never merged, only carried through to the export
(jaxmerge.vlm.checkpoint) and run once per image (jaxmerge.vlm.vision) to make the features the language model
reads at its image-token positions (jaxmerge.vlm.model).
"""
