"""coderl.distributed"""
