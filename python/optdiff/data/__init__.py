"""Image data sets: IDX (MNIST, Fashion-MNIST), Quick, Draw! .npy, image folders, the bundled 8x8
digits; resizing and scaling to the model's range. Loaders take a directory; nothing downloads."""

from .datasets import (
                       DATASETS,
                       dataset_class_names,
                       load_dataset,
                       read_idx,
                       read_image_folder,
                       read_quickdraw,
                       resize_images,
                       to_model_range,
)

__all__ = ["DATASETS", "load_dataset", "dataset_class_names", "read_idx", "read_quickdraw",
           "read_image_folder", "resize_images", "to_model_range"]
