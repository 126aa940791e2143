"""coderl.generation"""
