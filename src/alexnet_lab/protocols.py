"""Evaluation views: the names ``data.val_protocol`` / ``data.test_protocol`` take, and the words for them that
metrics.json (the DataModules' ``describe``) and the sweep report both use. No imports: the report reads it too."""

PROTOCOLS = {"center": "centre crop", "ten_crop": "10-crop: 4 corners + centre, each mirrored, softmax averaged"}
