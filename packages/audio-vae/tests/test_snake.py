import pytest
import torch
from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d

from skyreels_audio_vae import Snake, snake_reference


def test_snake_matches_reference_and_diffusers_snake1d():
    torch.manual_seed(0)
    snake = Snake(6)
    with torch.no_grad():
        snake.alpha.normal_(0, 0.5)
        snake.beta.normal_(0, 0.5)
    x = torch.randn(3, 6, 50) * 2
    ours = snake(x)
    ref = snake_reference(x, snake.alpha, snake.beta)
    # the formula written out once more, by hand, for one element
    a, b = snake.alpha[2].exp(), snake.beta[2].exp()
    assert torch.allclose(ours[1, 2, 7], x[1, 2, 7] + torch.sin(a * x[1, 2, 7]) ** 2 / (b + 1e-9), atol=1e-6)
    public = Snake1d(6)
    with torch.no_grad():
        public.alpha.copy_(snake.alpha[None, :, None])
        public.beta.copy_(snake.beta[None, :, None])
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours, public(x), rtol=1e-6, atol=1e-6)


def test_snake_init_is_x_plus_sin_squared_and_rejects_wrong_channels():
    snake = Snake(2)
    x = torch.linspace(-3, 3, 20).reshape(1, 2, 10)
    torch.testing.assert_close(snake(x), x + torch.sin(x) ** 2)
    with pytest.raises(ValueError, match="expected \\[B, 2, T\\]"):
        snake(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="channels"):
        Snake(0)
