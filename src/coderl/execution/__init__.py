"""coderl.execution"""
