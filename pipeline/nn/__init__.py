"""Networks shared by extraction and training: backbones with their weight loading, the
attention and text layers heads share (`layers`), word vectors (`word_vectors`) and device
helpers. Which network an extractor runs is the extractor registry's business
(`extractors.build_network`); each backbone module here has a `build(**config)`."""
