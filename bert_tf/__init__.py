"""bert_tf: fine-tune TF Hub BERT encoders for text classification with TensorFlow 2 and Keras 3."""

__version__ = "0.1.0"
