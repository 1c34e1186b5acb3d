"""The networks of Keras' CIFAR-10 example load into resnetkit with identical logits: Keras itself is the reference.

The example (keras-team/keras ``examples/cifar10_resnet.py``) is rebuilt below in Keras 3 with its own structure:
``resnet_layer``, ``resnet_v1``, ``resnet_v2``, unnamed layers. Its weights are made random all through
(kernels by he_normal, and biases, BN scales, offsets and moving statistics drawn here), saved, loaded
into resnetkit, and both networks see the same images. The one liberty: the classifier's softmax is an
argument, so the test compares logits, which softmax would flatten.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its PyTorch backend (KERAS_BACKEND=torch)", allow_module_level=True)

from keras import layers  # noqa: E402

from resnetkit import create_model, list_models  # noqa: E402
from resnetkit.models import count_params  # noqa: E402
from resnetkit.models.keras import load_keras_model  # noqa: E402
from resnetkit.models.sources import open_model  # noqa: E402
from resnetkit.models.state_dict import WeightFileError  # noqa: E402
from test_keras import _randomise as randomise_keras_weights  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
INPUT_SHAPE = (32, 32, 3)


# ---- the example's model functions, as Keras code ----------------------------------------------------------

def resnet_layer(inputs, num_filters=16, kernel_size=3, strides=1, activation="relu", batch_normalization=True,
                 conv_first=True):
    conv = layers.Conv2D(num_filters, kernel_size=kernel_size, strides=strides, padding="same",
                         kernel_initializer="he_normal", kernel_regularizer=keras.regularizers.l2(1e-4))
    x = inputs
    if conv_first:
        x = conv(x)
        x = layers.BatchNormalization()(x) if batch_normalization else x
        x = layers.Activation(activation)(x) if activation is not None else x
    else:
        x = layers.BatchNormalization()(x) if batch_normalization else x
        x = layers.Activation(activation)(x) if activation is not None else x
        x = conv(x)
    return x


def classifier(x, num_classes, activation):
    x = layers.AveragePooling2D(pool_size=8)(x)
    return layers.Dense(num_classes, activation=activation, kernel_initializer="he_normal")(layers.Flatten()(x))


def resnet_v1(input_shape, depth, num_classes=10, activation="softmax"):
    num_filters, num_res_blocks = 16, (depth - 2) // 6
    inputs = keras.Input(shape=input_shape)
    x = resnet_layer(inputs)
    for stack in range(3):
        for res_block in range(num_res_blocks):
            downsample = stack > 0 and res_block == 0
            strides = 2 if downsample else 1
            y = resnet_layer(x, num_filters, strides=strides)
            y = resnet_layer(y, num_filters, activation=None)
            if downsample:  # a linear projection where the shape changes
                x = resnet_layer(x, num_filters, kernel_size=1, strides=strides, activation=None,
                                 batch_normalization=False)
            x = layers.Activation("relu")(layers.add([x, y]))
        num_filters *= 2
    return keras.Model(inputs, classifier(x, num_classes, activation))


def resnet_v2(input_shape, depth, num_classes=10, activation="softmax"):
    num_filters_in, num_res_blocks = 16, (depth - 2) // 9
    inputs = keras.Input(shape=input_shape)
    x = resnet_layer(inputs, num_filters_in, conv_first=True)
    for stage in range(3):
        for res_block in range(num_res_blocks):
            act, bn, strides = "relu", True, 1
            if stage == 0:
                num_filters_out = num_filters_in * 4
                if res_block == 0:
                    act, bn = None, False
            else:
                num_filters_out = num_filters_in * 2
                if res_block == 0:
                    strides = 2
            y = resnet_layer(x, num_filters_in, kernel_size=1, strides=strides, activation=act,
                             batch_normalization=bn, conv_first=False)
            y = resnet_layer(y, num_filters_in, conv_first=False)
            y = resnet_layer(y, num_filters_out, kernel_size=1, conv_first=False)
            if res_block == 0:
                x = resnet_layer(x, num_filters_out, kernel_size=1, strides=strides, activation=None,
                                 batch_normalization=False)
            x = layers.add([x, y])
        num_filters_in = num_filters_out
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    return keras.Model(inputs, classifier(x, num_classes, activation))


# ---- helpers -------------------------------------------------------------------------------------------------

def _randomise(model, seed: int) -> None:
    randomise_keras_weights(model, seed, offset_std=0.2)


def _keras_params(model) -> int:
    return int(model.count_params())  # trainable + BatchNorm's moving mean and variance


def _our_keras_count(net) -> int:
    """What Keras' count_params counts, on our side: parameters plus BN running mean and variance."""
    stats = sum(b.numel() for name, b in net.named_buffers() if name.endswith(("running_mean", "running_var")))
    return count_params(net) + stats


def _max_logit_difference(keras_model, net, images: torch.Tensor, label: str) -> float:
    """The largest logit difference, relative to the largest logit where that is above 1."""
    expected = np.asarray(keras_model(images.permute(0, 2, 3, 1).numpy()).detach().cpu())
    with torch.no_grad():
        got = net(images).numpy()
    assert got.shape == expected.shape
    difference, largest = float(np.abs(got - expected).max()), float(np.abs(expected).max())
    print(f"{label}: max |logit difference| {difference:.2e} (largest |logit| {largest:.2f})")
    return difference / max(1.0, largest)


@pytest.fixture(autouse=True)
def _keras_seed():
    keras.utils.set_random_seed(0)  # the kernels' he_normal draw too, so the printed differences repeat


@pytest.fixture(scope="module")
def resnet20v1(tmp_path_factory):
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("keras_cifar")
    model = resnet_v1(INPUT_SHAPE, 20, activation=None)
    _randomise(model, seed=0)
    model.save_weights(folder / "r20v1.weights.h5")
    model.save(folder / "r20v1.h5")  # legacy HDF5, the file the example's ModelCheckpoint writes
    return model, folder


# ---- the tests -----------------------------------------------------------------------------------------------

def test_resnet20v1_files_and_model_give_keras_logits(resnet20v1):
    model, folder = resnet20v1
    images = torch.rand(4, 3, 32, 32) - 0.5  # the example's inputs: 0..1 less the mean image
    for source in (folder / "r20v1.weights.h5", folder / "r20v1.h5", model):
        net, info = load_keras_model(source)
        assert net.config.arch == "keras_cifar_resnet20v1"
        label = f"{net.config.arch} from {getattr(source, 'name', source)}"
        assert _max_logit_difference(model, net, images, label) <= 1e-4
    assert info.preprocess.std == (1.0, 1.0, 1.0)  # the example only subtracts a mean


@pytest.mark.parametrize("depth", [20, pytest.param(56, marks=pytest.mark.slow)])
def test_resnet_v2_weights_give_keras_logits(tmp_path, depth):
    model = resnet_v2(INPUT_SHAPE, depth, activation=None)
    _randomise(model, seed=depth)
    model.save_weights(tmp_path / "v2.weights.h5")
    net, _ = load_keras_model(tmp_path / "v2.weights.h5")
    assert net.config.arch == f"keras_cifar_resnet{depth}v2"
    assert _max_logit_difference(model, net, torch.rand(4, 3, 32, 32) - 0.5, net.config.arch) <= 1e-4


def test_odd_sizes_pad_like_tensorflow():
    """At 33x33 every stride-2 convolution sees an odd size (33, 17), where "same" pads both sides; the 32x32
    tests cover even sizes, padded only after. Compared before pooling: AveragePooling2D(8) is global only at 32."""
    model = resnet_v1((33, 33, 3), 20, activation=None)
    _randomise(model, seed=4)
    pooling = next(layer for layer in model.layers if isinstance(layer, layers.AveragePooling2D))
    features = keras.Model(model.inputs, pooling.input)
    net, _ = load_keras_model(model)
    images = torch.rand(2, 3, 33, 33) - 0.5
    expected = np.asarray(features(images.permute(0, 2, 3, 1).numpy()).detach().cpu())
    with torch.no_grad():
        got = net.forward_features(images).permute(0, 2, 3, 1).numpy()
    assert got.shape == expected.shape == (2, 9, 9, 64)
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_softmax_head_and_other_class_counts_load_too(tmp_path):
    model = resnet_v1(INPUT_SHAPE, 20, num_classes=100)  # as the example builds it: softmax, here for CIFAR-100
    _randomise(model, seed=3)
    net, _ = load_keras_model(model)
    assert net.num_classes == 100
    images = torch.rand(2, 3, 32, 32) - 0.5
    expected = np.asarray(model(images.permute(0, 2, 3, 1).numpy()).detach().cpu())
    with torch.no_grad():
        assert np.abs(net(images).softmax(1).numpy() - expected).max() <= 1e-5


def _depth(name: str) -> int:
    return int(name.removeprefix("keras_cifar_resnet")[:-2])


# Keras takes seconds to build the deep ones: those run with -m slow.
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if _depth(n) > 56 else [])
                                  for n in list_models("keras_cifar_resnet*")])
def test_parameter_counts_equal_keras_count_params(name):
    depth, version = _depth(name), name[-1]
    keras_model = (resnet_v1 if version == "1" else resnet_v2)(INPUT_SHAPE, depth)
    with torch.device("meta"):
        net = create_model(name)
    assert _our_keras_count(net) == _keras_params(keras_model), name
    assert count_params(net) == sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights), name


def test_open_model_by_name_must_agree_with_the_file(resnet20v1):
    _, folder = resnet20v1
    net, _ = open_model("keras_cifar_resnet20v1", weights=str(folder / "r20v1.weights.h5"))
    assert net.config.arch == "keras_cifar_resnet20v1"
    assert open_model(str(folder / "r20v1.h5"))[0].config.arch == "keras_cifar_resnet20v1"
    with pytest.raises(WeightFileError, match=r"r20v1.h5: holds a Keras keras_cifar_resnet20v1 .* not keras_cifar_re"):
        open_model("keras_cifar_resnet32v1", weights=str(folder / "r20v1.h5"))


def test_a_loaded_example_saves_as_a_resnetkit_model_file(resnet20v1, tmp_path):
    from resnetkit import load_model, save_model

    _, folder = resnet20v1
    net, info = load_keras_model(folder / "r20v1.h5")
    again, again_info = load_model(save_model(net, tmp_path / "r20v1.safetensors", info=info))
    assert again.config.arch == "keras_cifar_resnet20v1" and again_info.preprocess == info.preprocess
    x = torch.rand(2, 3, 32, 32) - 0.5
    with torch.no_grad():
        assert torch.equal(again(x), net(x))


def test_a_wrong_shape_is_refused_naming_the_file_and_the_layer(resnet20v1, tmp_path):
    import h5py

    _, folder = resnet20v1
    crafted = tmp_path / "crafted.weights.h5"
    crafted.write_bytes((folder / "r20v1.weights.h5").read_bytes())
    with h5py.File(crafted, "r+") as handle:  # the 4th convolution (layer1.1.conv1) with 8 filters, not 16
        convs = sorted((n for n in handle["layers"] if n.startswith("conv2d")),
                       key=lambda n: int(n.removeprefix("conv2d").lstrip("_") or 0))
        conv = convs[3]
        del handle[f"layers/{conv}/vars/0"]
        handle[f"layers/{conv}/vars/0"] = np.zeros((3, 3, 16, 8), "float32")
    with pytest.raises(WeightFileError, match=rf"crafted.weights.h5: layer '{conv}' \(convolution 4 of 21, for "
                                              r"layer1.1.conv1\) .*\(3, 3, 16, 8\)"):
        load_keras_model(crafted)


def test_an_unregistered_depth_is_named(tmp_path):
    model = resnet_v1(INPUT_SHAPE, 8)  # n = 1: the example builds it, resnetkit does not register it
    model.save_weights(tmp_path / "r8.weights.h5")
    with pytest.raises(WeightFileError, match="ResNet-8 v1 of Keras' cifar10_resnet.py.*keras_cifar_resnet20v1"):
        load_keras_model(tmp_path / "r8.weights.h5")
