"""coderl.critic"""
