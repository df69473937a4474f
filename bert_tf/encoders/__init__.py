"""BERT encoders in pure TensorFlow, their loaders, and the TF Hub-format exporter."""
