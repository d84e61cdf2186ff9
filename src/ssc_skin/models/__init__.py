"""Models: Keras builders (UNet, MobileNetV2, CNN), training loops, Grad-CAM."""
