"""Install: pip install -e .[test]; the figures of reproduce.py: pip install -e '.[plots]'"""
from setuptools import find_packages, setup

setup(
    name='maml-tf2',
    version='0.1.0',
    description='Faithful TensorFlow 2 reproduction of MAML (Finn, Abbeel and Levine, ICML 2017)',
    python_requires='>=3.9',
    # tools/ (benchmark, the sinusoid study, the implementations' harness) is run from the clone, not installed
    py_modules=['main', 'maml', 'execution', 'data_generator', 'utils', 'special_grads', 'tf1_checkpoint',
                'paper', 'reproduce', 'plots'],
    packages=find_packages(include=['data', 'data.*']),
    install_requires=['tensorflow>=2.16', 'numpy', 'pillow', 'absl-py'],
    extras_require={'test': ['pytest'], 'plots': ['matplotlib']},
)
