"""coderl.sampling"""
