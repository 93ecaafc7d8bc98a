"""tinyprompt: prompt learning on CLIP in plain PyTorch (one distribution, two import roots).

The top-level `kernels/` folder is installed as `tinyprompt.kernels` through `package_dir`, so the
Triton kernels live beside the package in the repository but import as part of it.
"""
from setuptools import setup

setup(
    name="tinyprompt",
    version="0.1.0",
    description="Minimal-dependency prompt learning on CLIP: CoOp, TaI-DPT, ILM-VP, SHIP, POMP",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["tinyprompt", "tinyprompt.methods", "tinyprompt.data", "tinyprompt.commands", "tinyprompt.commands.recipes", "tinyprompt.kernels", "tinyprompt.weights"],
    # the repository keeps kernels/ and weights/ at the top level; they install inside the package
    package_dir={"tinyprompt.kernels": "kernels", "tinyprompt.weights": "weights"},
    # the built-in tiny CLIP and the model manifests; the papers' published numbers (tinyprompt.protocols)
    package_data={"tinyprompt.weights": ["*.json", "synthetic.pt", "synthetic_bpe.txt"], "tinyprompt.data": ["*.json"]},
    install_requires=[
        "torch",
        "numpy",
        "ftfy",
        "regex",
        "triton; platform_system == 'Linux'",
    ],
    extras_require={
        "images": ["Pillow"],
        "plot": ["matplotlib"],
        "safetensors": ["safetensors"],  # .safetensors prompt files (tinyprompt.methods.save_prompt)
        "test": ["pytest", "Pillow"],
    },
    entry_points={"console_scripts": ["tinyprompt = tinyprompt.commands.cli:entry"]},
)
