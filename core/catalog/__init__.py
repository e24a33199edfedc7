"""The dataset catalog: governed datasets, their names, files and backing stores."""
